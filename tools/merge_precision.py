"""How far the merged UNIV backbone is from the unmerged LoRA student, next to fp32's own error.

On the real images of a pre-training run's held-out pairs (RGB and thermal, at the node's input
size): max abs token difference merged vs unmerged, both run in fp32 and both run in float64
(what the export checks, also on random images), and each fp32 model's distance to the
unmerged student computed in float64 (the exact result, up to 1e-15).

    .venv/bin/python tools/merge_precision.py runs/pretrain_224a5 \
        runs/pretrain_224a5/lora_step00120.safetensors
"""

import argparse
import copy
import json
from pathlib import Path

import torch

from univ_core.data.paired import PairedRgbtDataset
from univ_core.data.transforms import PairedRandomResizedCrop
from univ_core.eval.alignment import load_heldout
from univ_core.export.merge import merge_difference, run_student
from univ_core.models.lora import load_lora_strict, lora_state, merge_lora
from univ_core.models.model_file import DEFAULT_INPUT_SIZE


def main() -> int:
    """Print the differences as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('run', type=Path, help='a univ pretrain run folder')
    parser.add_argument('snapshot', type=Path, nargs='?', help='a LoRA snapshot of that run')
    args = parser.parse_args()
    _, _, student = run_student(args.run, args.snapshot)
    half = {n: p.detach().half().float() for n, p in lora_state(student).items()}
    load_lora_strict(student, half, 'fp16 adapter')  # what the exported adapter holds
    merged = merge_lora(student).eval()
    exact = copy.deepcopy(student).double()
    merged64 = copy.deepcopy(merged).double()  # what the export checks: merged_vs_unmerged_float64
    pairs = load_heldout(args.run / 'pairs.json')
    data = PairedRgbtDataset(pairs, train=False, crop=PairedRandomResizedCrop(DEFAULT_INPUT_SIZE))
    out = {'merged_vs_unmerged': 0.0, 'unmerged_fp32_vs_exact': 0.0,
           'merged_fp32_vs_exact': 0.0, 'token_max': 0.0, 'merged_vs_unmerged_float64': 0.0}
    with torch.inference_mode():
        for sample in data:
            images = torch.stack([sample['rgb'], sample['ir']])
            a, m, ref = student(images), merged(images), exact(images.double())
            for key, value in (('merged_vs_unmerged', a - m), ('unmerged_fp32_vs_exact', a - ref),
                               ('merged_fp32_vs_exact', m - ref), ('token_max', a),
                               ('merged_vs_unmerged_float64', merged64(images.double()) - ref)):
                out[key] = max(out[key], float(value.abs().max()))
        out['random_images_merged_vs_unmerged'] = merge_difference(student, merged,
                                                                   DEFAULT_INPUT_SIZE)
    out['pairs'], out['size'] = len(data), list(DEFAULT_INPUT_SIZE)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
