"""Scores of a replay: predictions joined to the bag's ground truth by header stamp.

Ground truth is matched by stamp: ``/ground_truth/rgb/detections`` and the segmentation mask
carry the RGB image's header, ``/ground_truth/thermal/detections`` the thermal image's. A bag is
read in timestamp order and ground truth is stamped like its image, so once the bag has moved
past a pair's stamps all of its ground truth has been seen (:meth:`Scorer.settle`).

Which ground truth scores which prediction: ``rgb`` predictions (RGB pixels) against the RGB
boxes, ``thermal`` ones (thermal pixels) against the thermal boxes, ``fused`` ones (RGB pixels;
the cameras are pixel-aligned) against :func:`fused_truth`, every object seen by either camera.
Masks are in the RGB frame and score all modes (pixel-aligned datasets).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from univ_core.eval.fused_truth import fused_truth
from univ_core.eval.metrics import DetectionMeter, SegmentationMeter
from univ_ros.conversions import image_to_numpy
from univ_ros.replay import topics as T
from univ_ros.replay.bagio import stamp_ns


def boxes_from_msg(msg: Any, class_names: list[str] | None = None
                   ) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Detection2DArray -> (K, 4) float32 xyxy pixels, K class names, (K,) float32 scores.

    ``class_names``: the LabelInfo map of a node publishing integer class ids (``class_id: id``);
    a ``class_id`` that is a decimal index into it becomes that name. Without it, class_id
    is taken as the name.
    """
    boxes, names, scores = [], [], []
    for det in msg.detections:
        cx, cy = det.bbox.center.position.x, det.bbox.center.position.y
        half_w, half_h = 0.5 * det.bbox.size_x, 0.5 * det.bbox.size_y
        boxes.append([cx - half_w, cy - half_h, cx + half_w, cy + half_h])
        best = det.results[0].hypothesis if det.results else None
        label = best.class_id if best is not None else ''
        if class_names is not None and label.isdigit() and int(label) < len(class_names):
            label = class_names[int(label)]
        names.append(label)
        scores.append(best.score if best is not None else 1.0)
    return (np.asarray(boxes, np.float32).reshape(-1, 4), names,
            np.asarray(scores, np.float32))


@dataclass
class _Pending:
    rgb_ns: int
    thermal_ns: int
    predictions: dict  # mode -> Prediction


@dataclass
class Scorer:
    """Accumulates mAP / mIoU per mode over a replay.

    Boxes are kept (they are small) and scored at the end, when every class name is known;
    masks are folded into confusion matrices as pairs settle.

    Args:
        det_classes: detection class names (the model's; ground-truth names outside them are
            appended and score AP 0).
        seg_classes: segmentation class names (mask ids index them), or None.
        margin_ns: how far behind the newest header stamp seen a pair is settled (> the sync
            window). Header stamps, not bag time: a re-recorded or sim-time bag logs its
            messages at times unrelated to their stamps.
    """

    det_classes: list[str] | None
    seg_classes: list[str] | None
    margin_ns: int = 2 * 10**9
    truth: dict = field(default_factory=dict)  # (topic, stamp ns) -> boxes dict or mask
    pending: list = field(default_factory=list)  # _Pending
    scored: int = 0  # pairs with ground truth
    unmatched_truth: int = 0  # ground-truth messages whose pair never formed (sync misses)
    newest_ns: int = -(2**63)  # the newest header stamp of truth or predictions
    det_items: dict = field(default_factory=dict)  # mode -> ([prediction], [target])
    seg_meters: dict = field(default_factory=dict)  # mode -> SegmentationMeter

    def add_truth(self, topic: str, msg: Any) -> None:
        """Keep a ground-truth message until its pair is scored."""
        key = (topic, stamp_ns(msg.header))
        self.newest_ns = max(self.newest_ns, key[1])
        if topic == T.GT_SEGMENTATION:
            self.truth[key] = np.array(image_to_numpy(msg))  # (H, W) uint8, 255 ignore
            return
        boxes, names, _ = boxes_from_msg(msg)
        self.truth[key] = {'boxes': boxes, 'labels': self._label_ids(names)}

    def _label_ids(self, names: list[str]) -> np.ndarray:
        self.det_classes = list(self.det_classes or [])
        self.det_classes += [n for n in dict.fromkeys(names) if n not in self.det_classes]
        return np.asarray([self.det_classes.index(n) for n in names], np.int64)

    def add_predictions(self, rgb_ns: int, thermal_ns: int, predictions: dict) -> None:
        """Predictions (mode -> Prediction) of the pair stamped (rgb_ns, thermal_ns)."""
        self.newest_ns = max(self.newest_ns, rgb_ns, thermal_ns)
        self.pending.append(_Pending(rgb_ns, thermal_ns, predictions))

    def settle(self, final: bool = True) -> None:
        """Score the pairs ``margin_ns`` behind the newest stamp (final: all), drop stale truth."""
        limit = np.iinfo(np.int64).max if final else self.newest_ns - self.margin_ns
        ready = [p for p in self.pending if max(p.rgb_ns, p.thermal_ns) < limit]
        self.pending = [p for p in self.pending if max(p.rgb_ns, p.thermal_ns) >= limit]
        for item in ready:
            self._score(item)
        stale = [key for key in self.truth if key[1] < limit]
        self.unmatched_truth += len(stale)
        for key in stale:
            del self.truth[key]

    def _score(self, item: _Pending) -> None:
        rgb = self.truth.pop((T.GT_RGB_DETECTIONS, item.rgb_ns), None)
        thermal = self.truth.pop((T.GT_THERMAL_DETECTIONS, item.thermal_ns), None)
        mask = self.truth.pop((T.GT_SEGMENTATION, item.rgb_ns), None)
        if rgb is None and thermal is None and mask is None:
            return
        both = rgb is not None and thermal is not None
        boxes = {'rgb': rgb, 'thermal': thermal,
                 'fused': fused_truth(rgb, thermal) if both else rgb or thermal}
        self.scored += 1
        for mode, prediction in item.predictions.items():
            if boxes[mode] is not None:
                predictions, targets = self.det_items.setdefault(mode, ([], []))
                predictions.append(prediction.detections)
                targets.append(boxes[mode])
            if mask is not None and prediction.mask is not None and self.seg_classes and \
                    prediction.mask.shape == mask.shape:
                meter = self.seg_meters.setdefault(mode, SegmentationMeter(self.seg_classes))
                meter.update(prediction.mask, mask)

    @classmethod
    def merged(cls, parts: Sequence['Scorer']) -> 'Scorer':
        """One Scorer holding every settled pair of ``parts``, in order (the bags of a fleet).

        Its :meth:`results` are the scores of all pairs together (COCO mAP over the union of
        detections and truths, mIoU from the summed confusion), as one replay of the
        concatenated bags gives. Ground-truth class ids are remapped to the union of names.
        """
        merged = cls([], None)
        for part in parts:
            part.settle()
            merged._label_ids(part.det_classes or [])
            ids = np.asarray([merged.det_classes.index(n) for n in part.det_classes or []],
                             np.int64)
            merged.seg_classes = merged.seg_classes or part.seg_classes
            merged.scored += part.scored
            merged.unmatched_truth += part.unmatched_truth
            for mode, (predictions, targets) in part.det_items.items():
                kept, truths = merged.det_items.setdefault(mode, ([], []))
                kept += predictions
                truths += [{**t, 'labels': ids[t['labels']]} for t in targets]
            for mode, meter in part.seg_meters.items():
                into = merged.seg_meters.setdefault(mode, SegmentationMeter(meter.class_names))
                into.confusion += meter.confusion
        return merged

    def results(self) -> dict:
        """Scores of every pair so far (settles all).

        Returns:
            'pairs_scored', 'truth_without_pair', 'detection': {mode: DetectionMeter.compute()
            + 'images'}, 'segmentation': {mode: SegmentationMeter.compute()}.
        """
        self.settle()
        names = [n for predictions, _ in self.det_items.values() for d in predictions
                 for n in d.class_names]
        self._label_ids(names)  # predicted names the class list lacks (a node with other names)
        detection = {}
        for mode, (predictions, targets) in self.det_items.items():
            if not self.det_classes:
                continue
            meter = DetectionMeter(self.det_classes)
            meter.update([_as_scored(d, self.det_classes) for d in predictions], targets)
            detection[mode] = {**meter.compute(), 'images': len(targets)}
        return {'pairs_scored': self.scored, 'truth_without_pair': self.unmatched_truth,
                'detection': detection,
                'segmentation': {m: meter.compute() for m, meter in self.seg_meters.items()}}


def _as_scored(dets: Any, class_names: list[str]) -> dict:
    """Detections -> {'boxes', 'scores', 'labels'} with ids into ``class_names``."""
    labels = [class_names.index(n) if n in class_names else -1 for n in dets.class_names]
    return {'boxes': dets.boxes, 'scores': dets.scores, 'labels': np.asarray(labels, np.int64)}
