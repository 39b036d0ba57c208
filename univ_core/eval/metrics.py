"""Evaluation metrics: segmentation mIoU from a confusion matrix, detection COCO mAP.

Both take numpy arrays in and give plain dicts out, so callers never see torch.

Segmentation: per-class IoU = TP / (TP + FP + FN) from a confusion matrix accumulated over the
whole split (not averaged per image). Pixels whose target is `ignore_index` (255) are skipped.
A class absent from both ground truth and predictions has no IoU: it is NaN and left out of the
mean (as mmsegmentation does), so mIoU averages only the classes that occur.

Detection: COCO mAP@[.5:.95] and mAP50 through `torchmetrics.detection.MeanAveragePrecision`
(pycocotools backend: 101-point interpolated precision, at most `max_detections` per image).
A class with no ground-truth box has no AP: NaN, left out of the mean (as pycocotools does).
"""

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics.detection import MeanAveragePrecision


def confusion_matrix(
    prediction: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = 255
) -> np.ndarray:
    """Counts of (target class, predicted class) over the pixels of one or more label maps.

    Args:
        prediction: (H, W) or (B, H, W) integer predicted class ids in [0, num_classes).
        target: same shape, integer ground-truth ids in [0, num_classes) or `ignore_index`.
        num_classes: number of classes C.
        ignore_index: target value of pixels left out.

    Returns:
        (C, C) int64 matrix, rows the target class, columns the predicted class.
    """
    if prediction.shape != target.shape:
        raise ValueError(f'prediction shape {prediction.shape} != target shape {target.shape}')
    for name, array in (('prediction', prediction), ('target', target)):
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f'{name} must hold integer class ids, got dtype {array.dtype}')
    valid = target != ignore_index
    truth = target[valid].astype(np.int64)
    guess = prediction[valid].astype(np.int64)
    for name, ids in (('target', truth), ('prediction', guess)):
        if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
            raise ValueError(
                f'{name} holds class ids outside [0, {num_classes}) '
                f'(min {ids.min()}, max {ids.max()}; ignore_index {ignore_index})'
            )
    counts = np.bincount(truth * num_classes + guess, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)  # (C, C): target rows, prediction columns


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN).

    Args:
        confusion: (C, C) integer counts, rows the target class, columns the predicted class.

    Returns:
        (C,) float64; NaN for a class absent from both target and prediction (union 0).
    """
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    iou = np.full(len(tp), np.nan)
    present = union > 0
    iou[present] = tp[present] / union[present]
    return iou


def _nanmean(values: np.ndarray) -> float:
    """Mean of the finite entries; NaN when there are none (without numpy's warning)."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float('nan')


class SegmentationMeter:
    """Accumulates a confusion matrix over a split and reports mIoU and per-class IoU."""

    def __init__(self, class_names: Sequence[str], ignore_index: int = 255) -> None:
        """Args: class_names: name of each class id; ignore_index: target value to skip."""
        if not class_names:
            raise ValueError('class_names must name at least one class')
        self.class_names = list(class_names)
        self.ignore_index = ignore_index
        self.confusion = np.zeros((len(self.class_names),) * 2, dtype=np.int64)

    def reset(self) -> None:
        """Forget everything accumulated."""
        self.confusion[:] = 0

    def update(self, prediction: np.ndarray, target: np.ndarray) -> None:
        """Add one or more label maps.

        Args:
            prediction: (H, W) or (B, H, W) integer predicted class ids.
            target: same shape, integer ground-truth ids or `ignore_index`.
        """
        self.confusion += confusion_matrix(
            prediction, target, len(self.class_names), self.ignore_index
        )

    def compute(self) -> dict:
        """Scores so far.

        Returns:
            'miou': mean IoU over classes with a defined IoU (NaN ones excluded);
            'iou': {class name: IoU or NaN}; 'pixel_accuracy': correct / counted pixels;
            'pixels': pixels counted (ignored ones excluded).
        """
        iou = iou_per_class(self.confusion)
        pixels = int(self.confusion.sum())
        correct = int(np.trace(self.confusion))
        return {
            'miou': _nanmean(iou),
            'iou': dict(zip(self.class_names, iou.tolist(), strict=True)),
            'pixel_accuracy': correct / pixels if pixels else float('nan'),
            'pixels': pixels,
        }


def _as_tensors(item: dict, keys: Sequence[str], num_classes: int, what: str) -> dict:
    """Boxes/scores/labels (numpy) of one image -> the tensors torchmetrics expects."""
    missing = [key for key in keys if key not in item]
    if missing:
        raise ValueError(f'{what} lacks keys {missing}; expected {list(keys)}')
    boxes = np.asarray(item['boxes'], dtype=np.float32).reshape(-1, 4)  # (N, 4) xyxy
    labels = np.asarray(item['labels'], dtype=np.int64).reshape(-1)  # (N,)
    if len(labels) != len(boxes):
        raise ValueError(f'{what}: {len(boxes)} boxes but {len(labels)} labels')
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f'{what}: labels outside [0, {num_classes}): {np.unique(labels)}')
    out = {'boxes': torch.from_numpy(boxes), 'labels': torch.from_numpy(labels)}
    if 'scores' in keys:
        scores = np.asarray(item['scores'], dtype=np.float32).reshape(-1)  # (N,)
        if len(scores) != len(boxes):
            raise ValueError(f'{what}: {len(boxes)} boxes but {len(scores)} scores')
        out['scores'] = torch.from_numpy(scores)
    return out


def _class_ap(precision: np.ndarray) -> float:
    """AP from pycocotools' precision slice ((T, R) or (R,)); -1 marks 'no ground truth'."""
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else float('nan')


class DetectionMeter:
    """COCO-style box mAP over a split (torchmetrics + pycocotools), with per-class AP."""

    def __init__(self, class_names: Sequence[str], max_detections: int = 100) -> None:
        """Args: class_names: name of each label id; max_detections: top boxes kept per image."""
        if not class_names:
            raise ValueError('class_names must name at least one class')
        if max_detections < 10:
            raise ValueError(f'max_detections must be >= 10, got {max_detections}')
        self.class_names = list(class_names)
        self.max_detections = max_detections
        self._metric = self._new_metric()

    def _new_metric(self) -> MeanAveragePrecision:
        metric = MeanAveragePrecision(
            box_format='xyxy',
            iou_type='bbox',
            extended_summary=True,
            backend='pycocotools',
            max_detection_thresholds=[1, 10, self.max_detections],
        )
        metric.warn_on_many_detections = False
        return metric

    def reset(self) -> None:
        """Forget everything accumulated."""
        self._metric = self._new_metric()

    def update(self, predictions: Sequence[dict], targets: Sequence[dict]) -> None:
        """Add images.

        Args:
            predictions: per image {'boxes': (N, 4) float xyxy pixels, 'scores': (N,) float,
                'labels': (N,) int class ids}.
            targets: per image {'boxes': (K, 4) float xyxy pixels, 'labels': (K,) int}.
        """
        if len(predictions) != len(targets):
            raise ValueError(f'{len(predictions)} predictions but {len(targets)} targets')
        count = len(self.class_names)
        preds = [
            _as_tensors(p, ('boxes', 'scores', 'labels'), count, f'prediction {i}')
            for i, p in enumerate(predictions)
        ]
        truth = [
            _as_tensors(t, ('boxes', 'labels'), count, f'target {i}')
            for i, t in enumerate(targets)
        ]
        self._metric.update(preds, truth)

    def compute(self) -> dict:
        """Scores so far.

        Returns:
            'map': mAP@[.5:.95]; 'map50', 'map75': mAP at IoU 0.5 / 0.75 (NaN with no ground
            truth at all); 'ap': {class name: AP@[.5:.95]}; 'ap50': {class name: AP50}; a
            class with no ground-truth box gets NaN in both.
        """
        result = self._metric.compute()
        nan_if_missing = {key: float(result[key]) for key in ('map', 'map_50', 'map_75')}
        scores = {
            key: value if value >= 0 else float('nan') for key, value in nan_if_missing.items()
        }
        ap = dict.fromkeys(self.class_names, float('nan'))
        ap50 = dict.fromkeys(self.class_names, float('nan'))
        if 'precision' in result:
            # (T, R, K, A, M): IoU thresholds, recall steps, classes, areas, max-detection caps
            precision = result['precision'].numpy()
            class_ids = result['classes'].reshape(-1).tolist()  # K ids, sorted as pycocotools
            for k, class_id in enumerate(class_ids):
                name = self.class_names[class_id]
                ap[name] = _class_ap(precision[:, :, k, 0, -1])  # area 'all', top max_detections
                ap50[name] = _class_ap(precision[0, :, k, 0, -1])  # T index 0: IoU 0.50
            # pycocotools' own 'map' reads the cap 100 whatever max_detections is (-1 else)
            scores['map'] = _class_ap(precision[:, :, :, 0, -1])
        return {
            'map': scores['map'],
            'map50': scores['map_50'],
            'map75': scores['map_75'],
            'ap': ap,
            'ap50': ap50,
        }


def detection_map(
    predictions: Sequence[dict], targets: Sequence[dict], class_names: Sequence[str]
) -> dict:
    """One-shot DetectionMeter: same arguments as its update, same dict as its compute."""
    meter = DetectionMeter(class_names)
    meter.update(predictions, targets)
    return meter.compute()
