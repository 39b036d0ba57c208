"""``univ export``: a model file to ONNX, or a pre-training run's LoRA merged to safetensors.

Examples::

    univ export --model model.safetensors --format onnx --out univ.onnx --input-size 518 644
    univ export --format safetensors --from-pretrain runs/pretrain --out univ_backbone.safetensors
    univ export --format lora --from-pretrain runs/pretrain_univ --out univ_lora.safetensors

TensorRT: build the engine ON the vehicle from the .onnx (the command is printed after export;
see :mod:`univ_core.export.onnx`). The build takes minutes: log it, never do it at node start.
"""

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI flags of ``univ export``."""
    parser.add_argument('--format', choices=('onnx', 'safetensors', 'lora'), required=True,
                        help='onnx: backbone + heads graph; safetensors: merged LoRA backbone; '
                        'lora: the fp16 adapter alone (+ sidecar JSON)')
    parser.add_argument('--out', type=Path, required=True, help='file to write (atomically)')
    parser.add_argument('--model', default=None,
                        help='onnx: UNIV model file (default: the default model)')
    parser.add_argument('--input-size', type=int, nargs=2, metavar=('H', 'W'),
                        help="onnx: graph input size (default: the model file's)")
    parser.add_argument('--batch', type=int, default=None,
                        help='onnx: batch traced and verified (2; the batch axis stays dynamic)')
    parser.add_argument('--opset', type=int, default=None, help='onnx: opset (17 or 18; 17)')
    parser.add_argument('--from-pretrain', type=Path, metavar='RUN_DIR',
                        help='safetensors/lora: univ pretrain output folder holding last.pt')
    parser.add_argument('--snapshot', type=Path,
                        help='safetensors/lora: a lora_stepNNNNN.safetensors of the run '
                             'instead of last.pt')
    parser.add_argument('--tolerance', type=float,
                        help='largest max abs difference accepted: onnxruntime vs PyTorch (onnx, '
                        'default 1e-3), merged vs unmerged LoRA tokens in float64 (1e-4)')


def main(args: argparse.Namespace) -> int:
    """Entry point of ``univ export``."""
    if args.format in ('safetensors', 'lora') and args.from_pretrain is None:
        raise ValueError(f'--format {args.format} needs --from-pretrain RUN_DIR')
    if args.format == 'onnx' and (args.snapshot or args.from_pretrain):
        raise ValueError('--from-pretrain / --snapshot: a pretrain run exports as --format '
                         'safetensors or lora; --format onnx exports a model file (--model)')
    onnx_only = {'--model': args.model, '--input-size': args.input_size, '--batch': args.batch,
                 '--opset': args.opset}
    if args.format != 'onnx' and (given := [f for f, v in onnx_only.items() if v is not None]):
        raise ValueError(f'{", ".join(given)}: --format onnx only (--format {args.format} '
                         'exports the pretrain run as trained)')
    tolerance = () if args.tolerance is None else (args.tolerance,)  # None: each exporter's own
    if args.format == 'lora':
        from univ_core.export.merge import export_adapter

        record = export_adapter(args.from_pretrain, args.out, args.snapshot, *tolerance)
        print(f"univ export: adapter of {args.from_pretrain} (step {record['step']}) -> "
              f"{args.out} ({record['lora_parameters']:,} parameters, merged vs unmerged max "
              f"abs diff {record['merge_max_abs_diff']:.3g})")
        return 0
    if args.format == 'safetensors':
        from univ_core.export.merge import merge_pretrain_run

        diff = merge_pretrain_run(args.from_pretrain, args.out, *tolerance,
                                  snapshot=args.snapshot)
        print(f'univ export: merged LoRA of {args.snapshot or args.from_pretrain} -> {args.out} '
              f'(merged vs unmerged max abs diff {diff:.3g})')
        return 0
    from univ_core.export.onnx import DEFAULT_BATCH, DEFAULT_OPSET, export_onnx, trtexec_command
    from univ_core.models.model_file import default_model_path, load_model

    model, spec = load_model(Path(args.model) if args.model else default_model_path())
    size = tuple(args.input_size or spec.input_size)
    batch = DEFAULT_BATCH if args.batch is None else args.batch
    opset = DEFAULT_OPSET if args.opset is None else args.opset
    diffs = export_onnx(model, spec, args.out, size, batch, opset, *tolerance)
    print(f'univ export: {args.out} (input {batch}x3x{size[0]}x{size[1]}, batch dynamic)')
    for name, diff in diffs.items():
        print(f'  onnxruntime vs PyTorch max abs diff  {name:16s} {diff:.3g}')
    print('TensorRT (on the vehicle; SLOW, minutes: keep the log):\n  '
          + trtexec_command(args.out, size, batch))
    return 0
