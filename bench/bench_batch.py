"""Offline replay throughput: several pairs per forward (Predictor.predict_batch) vs baseline.

Baseline: eager fp32, one pair at a time, its two modalities in two forwards. Optimised: torch
fp32 and onnxruntime with ``--pairs-per-forward`` pairs (2x as many images) in one forward.
Bigger batches change the float summation order of some kernels (oneDNN picks them by batch
size), so a near-tie mask pixel may flip: the check allows MASK_TIE_PIXELS per 640x512 mask.

Model and pairs as bench_predictor (``--model shipped``, default: the shipped default model on
real msrs_mini pairs; ``random``: random heads on synthetic pairs).

usage: python bench/bench_batch.py [--model shipped|random] [--input-size H W] [--pairs 4]
       [--pairs-per-forward 4]
"""

import argparse
import copy

from common import (
    baseline_predict,
    bench_model,
    camera_pairs,
    compare,
    interleaved,
    outputs_equal,
    predictor_settings,
    print_header,
    save_json,
    table,
)

from univ_core.inference import Predictor, PredictorConfig

MASK_TIE_PIXELS = 3  # of 327,680 (1e-5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', choices=['shipped', 'random'], default='shipped')
    parser.add_argument('--input-size', type=int, nargs=2, default=None)
    parser.add_argument('--pairs', type=int, default=4, help='pairs per timed round')
    parser.add_argument('--pairs-per-forward', type=int, default=4)
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--score', type=float, default=None,
                        help='default: the deployment threshold; random heads: 0.1')
    parser.add_argument('--no-onnx', action='store_true')
    parser.add_argument('--json', default=None)
    args = parser.parse_args()
    info = print_header('Offline throughput with batching (pairs per forward)')
    model, spec = bench_model(args.model, args.input_size)
    config = predictor_settings(args.model, args.device, args.score, spec.input_size)
    torch_p = Predictor(copy.deepcopy(model), spec.seg_classes, spec.det_classes,
                        spec.input_size, PredictorConfig(**config))
    pairs, source = camera_pairs(args.pairs, real=args.model == 'shipped')
    k = args.pairs_per_forward

    def batched(predictor):
        def run():
            out = []
            for i in range(0, len(pairs), k):
                chunk = pairs[i: i + k]
                out += predictor.predict_batch([p[0] for p in chunk], [p[1] for p in chunk])
            return out
        return run

    variants = {'baseline: 1 pair/call, 2 forwards':
                lambda: [baseline_predict(torch_p, *p) for p in pairs],
                f'torch fp32, {k} pairs/forward': batched(torch_p)}
    if not args.no_onnx:
        ort_p = Predictor(copy.deepcopy(model), spec.seg_classes, spec.det_classes,
                          spec.input_size, PredictorConfig(backend='onnxruntime', **config))
        variants[f'onnxruntime fp32, {k} pairs/forward'] = batched(ort_p)
    outputs = {name: fn() for name, fn in variants.items()}  # also the warm-up round
    base_out = next(iter(outputs.values()))
    times = interleaved(variants, args.rounds, warmup=0)
    base_rate = len(pairs) / min(next(iter(times.values())))
    rows, results = [], {}
    for name, seconds in times.items():
        diffs = [compare(g, w) for g, w in zip(outputs[name], base_out, strict=True)]
        worst = max(diffs, key=lambda d: (d['mask_pixels_differing'], d['box_rel_err']))
        rate = len(pairs) / min(seconds)
        results[name] = {'pairs_per_s': rate, 'speedup': rate / base_rate, **worst,
                         'equal': all(outputs_equal(d, MASK_TIE_PIXELS) for d in diffs)}
        rows.append([name, rate, f'{rate / base_rate:.2f}x', worst['mask_pixels_differing'],
                     worst['box_rel_err']])
    h, w = spec.input_size
    print(f'{args.model} model, input {h}x{w}, {len(pairs)} pairs of 512x640 per round '
          f'({source}), best of {args.rounds} interleaved rounds\n')
    print(table(['variant', 'pairs/s', 'speed-up', 'mask px != baseline (worst pair)',
                 'box rel err'], rows))
    save_json(args.json, {'machine': info, 'model': args.model, 'input_size': spec.input_size,
                          'pairs': source, 'results': results})
    assert results[f'torch fp32, {k} pairs/forward']['equal'], results
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
