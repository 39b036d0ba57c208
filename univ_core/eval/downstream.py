"""`univ eval {seg,det}`: mIoU / mAP of a UNIV model per modality, through the Predictor.

Each modality's predictions are scored against that modality's labels: ``rgb`` against the RGB
boxes, ``ir`` against the thermal boxes, ``fused`` against :func:`fused_truth` (objects seen by
either camera). A model whose head was trained on one modality and is scored on the other is the
cross-modal transfer protocol (e.g. a head trained on RGB labels evaluated on IR images).
"""

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from univ_core.eval.fused_truth import fused_truth
from univ_core.eval.metrics import DetectionMeter, SegmentationMeter
from univ_core.eval.report import write_report
from univ_core.inference import PredictorConfig, load_predictor
from univ_core.inference.config import PRECISIONS
from univ_core.train.downstream_data import Split, open_split

MODES = {'rgb': 'rgb', 'ir': 'thermal', 'fused': 'fused'}  # eval modality -> Predictor mode


def detection_truth(sample: dict, modality: str) -> dict:
    """Boxes and labels of ``sample`` that score predictions of ``modality``."""
    rgb = {'boxes': sample['boxes_rgb'], 'labels': sample['labels_rgb']}
    ir = {'boxes': sample['boxes_ir'], 'labels': sample['labels_ir']}
    if modality == 'fused':
        return fused_truth(rgb, ir)
    return {'rgb': rgb, 'ir': ir}[modality]


def in_data_classes(det, class_names: list[str]) -> dict:
    """Detections as the data's class ids, matched by name; classes the data lacks dropped.

    A model's classes may be a superset of a dataset's (the default model's person / bicycle /
    car on LLVIP's persons): its other boxes cannot be scored there, as in COCO's per-class AP.
    """
    index = {name.lower(): i for i, name in enumerate(class_names)}
    ids = [index.get(name.lower(), -1) for name in det.class_names]
    keep = [i for i, k in enumerate(ids) if k >= 0]
    return {'boxes': det.boxes[keep], 'scores': det.scores[keep],
            'labels': np.asarray([ids[i] for i in keep], np.int64)}


def require_seg_classes(model: Sequence[str] | None, data: Sequence[str]) -> None:
    """ValueError unless the model's mask ids mean the data's (same names, same order).

    Mask ids are compared as integers, so a model trained on other classes (e.g. the default
    model's road-scene classes against MFNet's) would be scored id by id, meaninglessly.
    """
    if not model:
        raise ValueError('the model has no segmentation head (it publishes no masks); '
                         'evaluate it with `univ eval det`')
    if [c.lower() for c in model] != [c.lower() for c in data]:
        raise ValueError(f'the model segments {list(model)} but the data labels {list(data)}: '
                         'mIoU needs the same classes in the same order (label the data with '
                         '`univ autolabel` and evaluate with --format autolabel)')


def evaluate(task: str, predictor, data, modalities: list[str], overlays: int = 0,
             class_names: list[str] | None = None, truth: str = 'camera') -> tuple[dict, list]:
    """Metrics per modality; also up to ``overlays`` (sample, modality, prediction) to draw.

    ``truth`` (detection): 'camera' scores each modality against its own camera's boxes (fused:
    the objects either camera's boxes hold); 'either' scores every modality against the objects
    either camera's boxes hold, the common truth on which camera choices compare (a night
    pedestrian only the thermal labels hold is missed by an RGB-only detector too).

    mAP is computed from the Predictor's scoring detections (down to its
    ``eval_score_threshold``, COCO protocol); overlays show the deployment cut, and detection
    metrics add 'boxes_per_image' (at that cut) and 'objects_per_image' (labelled).
    """
    if truth not in ('camera', 'either'):
        raise ValueError(f"truth: expected 'camera' or 'either', got {truth!r}")
    if class_names is None:  # a set with boxes and masks names its mask ids apart
        seg_names = getattr(data, 'seg_class_names', None)
        class_names = seg_names if task == 'seg' and seg_names else data.class_names
    if task == 'seg':
        require_seg_classes(predictor.seg_classes, class_names)
    meters = {m: (DetectionMeter(class_names) if task == 'det'
                  else SegmentationMeter(class_names)) for m in modalities}
    shown = []
    counts = {m: {'boxes': 0, 'objects': 0} for m in modalities}  # deployment cut vs truth
    for index in tqdm(range(len(data)), desc=f'eval {task}', unit='pair', leave=False):
        sample = data[index]
        modes = tuple(MODES[m] for m in modalities)
        preds = predictor.predict_modes(sample['rgb'], sample['thermal'], modes,
                                        scoring=task == 'det')
        for modality in modalities:
            pred = preds[MODES[modality]]
            if task == 'det':
                det = pred.detections
                boxes = detection_truth(sample, modality if truth == 'camera' else 'fused')
                meters[modality].update([in_data_classes(det, class_names)], [boxes])
                pred = replace(pred, detections=det.above(predictor.config.score_threshold))
                counts[modality]['boxes'] += len(pred.detections.boxes)
                counts[modality]['objects'] += len(boxes['boxes'])
            else:
                meters[modality].update(pred.mask, sample['mask'])
            if len(shown) < overlays:
                shown.append((sample, modality, pred))
    metrics = {m: meter.compute() for m, meter in meters.items()}
    if task == 'det':  # what a deployed node publishes vs what is there, per image
        for m in modalities:
            metrics[m]['boxes_per_image'] = counts[m]['boxes'] / max(len(data), 1)
            metrics[m]['objects_per_image'] = counts[m]['objects'] / max(len(data), 1)
    return metrics, shown


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI flags of ``univ eval``."""
    parser.add_argument('task', choices=['seg', 'det'])
    parser.add_argument('--model', default='', help="UNIV model file ('' = the default model)")
    parser.add_argument('--data', type=Path, help='dataset root (default: msrs_mini)')
    parser.add_argument('--format', default=None, help='msrs_det | msrs_seg | mfnet | m3fd | ...')
    parser.add_argument('--split', default='train')
    parser.add_argument('--holdout', type=int, default=0,
                        help='evaluate only the N pairs held out by finetune data.holdout=N')
    parser.add_argument('--seed', type=int, default=0, help='holdout seed (as in finetune)')
    parser.add_argument('--modality', nargs='+', choices=list(MODES), default=['rgb', 'ir'])
    parser.add_argument('--device', default='auto')
    parser.add_argument('--precision', default='fp32', choices=PRECISIONS,
                        help='fp32 (default: the same numbers on every machine, as the transfer '
                        'tool and univ demo) or the deployment one (auto: bf16 / int8 where the '
                        'CPU has them, fp16 on CUDA)')
    parser.add_argument('--score-threshold', type=float, default=PredictorConfig.score_threshold,
                        help='deployment cut shown in overlays (mAP always uses every box '
                        'down to PredictorConfig.eval_score_threshold)')
    parser.add_argument('--out', type=Path, help='folder for report.json/.md and PNGs')


def main(args: argparse.Namespace) -> int:
    """Entry point of ``univ eval``."""
    from univ_core.data.home import data_home

    fmt = args.format or ('msrs_det' if args.task == 'det' else 'msrs_seg')
    split = Split(str(args.data or data_home() / 'msrs_mini'), fmt, args.split, args.holdout,
                  args.seed)
    train, held = open_split(split)
    data = held if args.holdout else train
    predictor = load_predictor(PredictorConfig(model=args.model, device=args.device,
                                               precision=args.precision,
                                               score_threshold=args.score_threshold))
    results, shown = evaluate(args.task, predictor, data, args.modality, overlays=4)
    key = 'map50' if args.task == 'det' else 'miou'
    for modality, metrics in results.items():
        extra = f"  mAP@[.5:.95] {metrics['map']:.4f}" if args.task == 'det' else ''
        print(f'{args.task} {modality:>5}: {key} {metrics[key]:.4f}{extra}  ({len(data)} pairs)')
    if args.out:
        meta = {'model': args.model or 'default', 'data': split.root, 'format': fmt,
                'split': args.split, 'holdout': args.holdout, 'pairs': len(data),
                'precision': predictor.precision, 'score_threshold': args.score_threshold,
                'map_from_score': min(args.score_threshold,
                                      predictor.config.eval_score_threshold)}
        write_report(args.out, args.task, results, meta, shown, predictor)
        print(f'eval: report -> {args.out}/report.md')
    return 0
