"""Where a model's segmentation errors come from, on the benchmark's held-out daytime frames.

Prints, per camera, the model's mIoU and its confusion matrix (rows: the teacher's class, columns:
the model's, % of the row), next to the *patch-grid ceiling*: the mIoU of an oracle that knows
the true class mix of every backbone patch (the truth averaged per patch cell, bilinearly
upsampled like the model's own probabilities, argmax). A model far below that ceiling loses on
what it calls each patch, not on the resolution of its patch grid.

    .venv/bin/python tools/seg_headroom.py [--model FILE] [--out runs/seg_headroom.json]
"""

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from univ_core.autolabel.config import AutolabelConfig
from univ_core.data.home import data_home
from univ_core.eval.benchmark import segmentation_set
from univ_core.eval.metrics import SegmentationMeter
from univ_core.inference import PredictorConfig, load_predictor
from univ_core.train.checkpoint import write_json


def patch_grid_oracle(mask: np.ndarray, grid: tuple[int, int], num_classes: int) -> np.ndarray:
    """(H, W) class ids of the patch-grid oracle for an (H, W) truth mask (ignored pixels skipped).

    Args:
        mask: (H, W) uint8 class ids in [0, num_classes) or any larger value (ignored, e.g. 255).
        grid: (rows, columns) of the model's patch grid.
        num_classes: C.
    """
    labelled = torch.from_numpy(mask.astype(np.int64))
    one_hot = F.one_hot(labelled.clamp(max=num_classes), num_classes + 1)[..., :num_classes]
    share = F.adaptive_avg_pool2d(one_hot.permute(2, 0, 1)[None].float(), grid)  # (1, C, h, w)
    up = F.interpolate(share, size=mask.shape, mode='bilinear', align_corners=False)
    return up[0].argmax(0).numpy().astype(np.uint8)


def main() -> int:
    """Entry point: prints (and with --out writes) the numbers of the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', default='', help="model file ('' = the shipped default)")
    parser.add_argument('--out', type=Path, default=None, help='write the numbers as JSON here')
    args = parser.parse_args()
    from univ_core.autolabel.run import load_labeller

    predictor = load_predictor(PredictorConfig(model=args.model, device='cpu', precision='fp32'))
    names = list(predictor.seg_classes or [])
    if not names:
        raise SystemExit(f'{args.model or "the default model"}: no segmentation head')
    patch = predictor.model.input_multiple
    grid = (predictor.input_size[0] // patch, predictor.input_size[1] // patch)
    meters = {k: SegmentationMeter(names) for k in ('rgb', 'thermal', 'oracle')}
    labeller = load_labeller(AutolabelConfig(detector='none'))  # the benchmark's truth
    for sample in segmentation_set(Path(data_home()), labeller):
        preds = predictor.predict_modes(sample['rgb'], sample['thermal'], ('rgb', 'thermal'))
        for mode in ('rgb', 'thermal'):
            meters[mode].update(preds[mode].mask, sample['mask'])
        meters['oracle'].update(patch_grid_oracle(sample['mask'], grid, len(names)),
                                sample['mask'])
    report = {}
    for key, meter in meters.items():
        metrics = meter.compute()
        rows = meter.confusion / np.maximum(meter.confusion.sum(1, keepdims=True), 1)
        report[key] = {'miou': metrics['miou'], 'iou': metrics['iou'],
                       'confusion_row_percent': np.round(100 * rows, 1).tolist()}
        print(f'{key}: mIoU {metrics["miou"]:.3f}  ' + '  '.join(
            f'{n} {v:.2f}' for n, v in metrics['iou'].items()))
        if key != 'oracle':
            print('  truth \\ predicted %: ' + ' '.join(f'{n[:6]:>6}' for n in names))
            for name, row in zip(names, rows, strict=True):
                print(f'  {name:>20}: ' + ' '.join(f'{100 * v:6.0f}' for v in row))
    print(f'patch grid {grid[0]} x {grid[1]} at {predictor.input_size[0]} x '
          f'{predictor.input_size[1]}')
    if args.out:
        write_json(args.out, {'grid': grid, **report})  # NaN IoU (class absent) -> null
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
