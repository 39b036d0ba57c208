"""Predictor latency per 640x512 RGB + 640x512 mono16 pair: baseline vs optimised variants.

Model: the shipped default model at its input size (``--model shipped``, default: what the
node runs) on real msrs_mini pairs resized to 640x512 (mono16 thermal), or the default
architecture with random heads on synthetic pairs (``--model random``). Baseline: eager fp32,
the two modalities in two forwards. Variants: one batched forward (torch), and with
--variants: onnxruntime (same preprocessing and post-processing), onnxruntime with int8
MatMuls (CPU), channels-last, bf16/fp16 autocast, torch.compile (its warm-up is reported:
minutes on a CPU). Reduced-precision rows (bf16, fp16, int8) are not expected to equal the
baseline: their table columns say by how much they differ.

usage: python bench/bench_predictor.py [--model shipped|random] [--input-size H W] [--runs 30]
       [--json out.json]
"""

import argparse
import copy
import time

from common import (
    baseline_predict,
    bench_model,
    camera_pairs,
    compare,
    interleaved,
    median_ratio,
    outputs_equal,
    predictor_settings,
    print_header,
    save_json,
    stats_ms,
    table,
)

from univ_core.inference import Predictor, PredictorConfig

# --variants name -> (row label, PredictorConfig overrides); the baseline and torch fp32 always run
EXTRA = {
    'onnxruntime': ('onnxruntime fp32 (batched)', {'backend': 'onnxruntime'}),
    'int8': ('onnxruntime int8 MatMuls (batched, CPU)',
             {'backend': 'onnxruntime', 'precision': 'int8'}),
    'channels_last': ('torch fp32 channels-last (batched)', {'channels_last': True}),
    'bf16': ('torch bf16 autocast (batched)', {'precision': 'bf16'}),
    'fp16': ('torch fp16 autocast (batched, CUDA)', {'precision': 'fp16'}),
    'compile': ('torch.compile fp32 (batched)', {'compile': True}),
}


def build_variants(args, model, spec, config: dict) -> tuple[dict, dict]:
    """{name: predict(rgb, thermal) -> Prediction} and {name: seconds to construct the
    Predictor and run its first pair (export / compile / kernel tuning included)}; ``config``:
    the PredictorConfig fields they share (:func:`predictor_settings`)."""
    rgb, thermal = args.pairs[1]

    def predictor(**extra):
        start = time.perf_counter()
        made = Predictor(copy.deepcopy(model), spec.seg_classes, spec.det_classes,
                         spec.input_size, PredictorConfig(**{**config, **extra}))
        made.predict(rgb, thermal)
        return made, time.perf_counter() - start

    torch_fp32, first = predictor()
    variants = {
        'baseline: eager fp32, 2 forwards': lambda r, t: baseline_predict(torch_fp32, r, t),
        'torch fp32, 1 batched forward': torch_fp32.predict,
    }
    setup = {'torch fp32, 1 batched forward': first}
    for key in args.variants:
        label, overrides = EXTRA[key]
        made, setup[label] = predictor(**overrides)
        variants[label] = made.predict
    return variants, setup


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', choices=['shipped', 'random'], default='shipped')
    parser.add_argument('--input-size', type=int, nargs=2, default=None,
                        help="model input H W (default: the shipped model's; random: 336 448)")
    parser.add_argument('--runs', type=int, default=30)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--score', type=float, default=None,
                        help='detection score threshold (default: the deployment one; random '
                             'heads: 0.1, which keeps a few boxes)')
    parser.add_argument('--variants', nargs='*', default=['onnxruntime'], choices=list(EXTRA),
                        help='extra variants (compile: minutes of warm-up on a CPU)')
    parser.add_argument('--json', default=None)
    args = parser.parse_args()
    args.camera_hw = (512, 640)
    info = print_header('Predictor latency per 640x512 RGB + mono16 pair')
    model, spec = bench_model(args.model, args.input_size)
    args.pairs, source = camera_pairs(2, args.camera_hw, real=args.model == 'shipped')
    config = predictor_settings(args.model, args.device, args.score, spec.input_size)
    variants, setup = build_variants(args, model, spec, config)
    rgb, thermal = args.pairs[0]
    reference = next(iter(variants.values()))(rgb, thermal)
    diffs = {name: compare(fn(rgb, thermal), reference) for name, fn in variants.items()}
    calls = {name: (lambda fn=fn: fn(rgb, thermal)) for name, fn in variants.items()}
    times = interleaved(calls, args.runs, args.warmup)
    base = next(iter(times.values()))
    rows, results = [], {}
    for name, seconds in times.items():
        s, d = stats_ms(seconds), diffs[name]
        results[name] = {**s, 'speedup_p50': median_ratio(base, seconds), **d,
                         'setup_s': setup.get(name, 0.0)}
        rows.append([name, s['p50'], s['p95'], f'{results[name]["speedup_p50"]:.2f}x',
                     d['mask_pixels_differing'], d['box_rel_err'], d['boxes']])
    h, w = spec.input_size
    print(f'{args.model} model, input {h}x{w}, score threshold '
          f'{config["score_threshold"]}, from 512x640 camera '
          f'images ({source}), device {args.device}, {args.runs} interleaved runs after '
          f'{args.warmup} warm-up\n')
    pixels = args.camera_hw[0] * args.camera_hw[1]
    print(table(['variant', 'p50 ms', 'p95 ms', 'speed-up (p50)',
                 f'mask px != baseline (of {pixels:,})',
                 'box rel err', 'boxes'], rows))
    print()
    for name, seconds in setup.items():
        print(f'- first pair of {name}, incl. set-up (export/compile/tuning): {seconds:.1f} s')
    save_json(args.json, {'machine': info, 'model': args.model, 'input_size': spec.input_size,
                          'pairs': source, 'results': results})
    optimised = results['torch fp32, 1 batched forward']
    assert outputs_equal(optimised), f'optimised fp32 outputs differ from baseline: {optimised}'
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
