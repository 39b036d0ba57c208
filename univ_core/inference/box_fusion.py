"""One list of boxes from two cameras: weighted box fusion and cross-class duplicate removal.

:func:`fuse_boxes` is weighted box fusion (WBF, Solovyev et al. 2021) across modalities: boxes
of one class from both cameras that overlap by more than ``iou`` form one cluster; its box is the
score-weighted mean of the members' corners. Its score combines the cameras: ``max`` takes the
best member, so an object seen by one camera keeps that camera's score (one camera is often
blind: RGB at night) and two weak boxes of one object stay weak; ``noisy_or`` (``1 - prod(1 -
s_m)`` over the cameras' best member scores, the score fusion of ProbEn, Chen et al. 2022)
raises an object both cameras saw above either, which also lifts pairs of sub-threshold boxes
over the deployment cut; ``avg`` (WBF's default: member mean x cameras present / cameras) halves
a one-camera object. ``PredictorConfig.fusion_rule`` says which one runs and why. Plain NMS over
the union (what fusion was before) keeps one of two slightly shifted boxes and its score alone.

:func:`suppress_duplicates` drops a box that overlaps a better-scoring box of ANY class by more
than ``iou``: a per-class sigmoid detector (FCOS) often reports one object under two classes.
"""

import numpy as np
import torch
from torchvision.ops import nms

SCORE_RULES = ('noisy_or', 'avg', 'max')


def _iou_one(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) xyxy box with (N, 4) boxes -> (N,)."""
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return inter / np.maximum(area + areas - inter, 1e-9)


def fuse_boxes(boxes: list[np.ndarray], scores: list[np.ndarray], labels: list[np.ndarray],
               *, iou: float, rule: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted box fusion of M cameras' detections (all in one pixel frame).

    Args:
        boxes: M arrays (K_m, 4) float xyxy pixels.
        scores: M arrays (K_m,) float in [0, 1].
        labels: M arrays (K_m,) int class ids.
        iou: a box joins a cluster of its class whose fused box it overlaps by more than this.
        rule: how a cluster's score combines the cameras (module docstring).

    Returns:
        boxes (K, 4) float32, scores (K,) float32, labels (K,) int64, best score first.
    """
    if rule not in SCORE_RULES:
        raise ValueError(f'fusion rule: expected one of {SCORE_RULES}, got {rule!r}')
    cams = len(boxes)
    all_boxes = np.concatenate([np.asarray(b, np.float64).reshape(-1, 4) for b in boxes])
    all_scores = np.concatenate([np.asarray(s, np.float64).reshape(-1) for s in scores])
    all_labels = np.concatenate([np.asarray(c, np.int64).reshape(-1) for c in labels])
    cam = np.concatenate([np.full(len(np.asarray(s).reshape(-1)), m) for m, s in
                          enumerate(scores)]).astype(np.int64)
    out_boxes, out_scores, out_labels = [], [], []
    for label in np.unique(all_labels):
        idx = np.flatnonzero(all_labels == label)
        idx = idx[np.argsort(-all_scores[idx], kind='stable')]  # best first
        fused: list[np.ndarray] = []  # current fused box per cluster
        members: list[list[int]] = []
        for i in idx:
            if fused:
                overlap = _iou_one(all_boxes[i], np.stack(fused))
                best = int(overlap.argmax())
                if overlap[best] > iou:
                    members[best].append(i)
                    w = all_scores[members[best]][:, None]  # (n, 1) weights
                    fused[best] = (w * all_boxes[members[best]]).sum(0) / max(w.sum(), 1e-12)
                    continue
            fused.append(all_boxes[i].copy())
            members.append([i])
        for box, group in zip(fused, members, strict=True):
            s, c = all_scores[group], cam[group]
            best_per_cam = np.array([s[c == m].max() if (c == m).any() else 0.0
                                     for m in range(cams)])
            if rule == 'noisy_or':
                score = 1.0 - np.prod(1.0 - best_per_cam)
            elif rule == 'avg':
                score = s.mean() * min(len(set(c.tolist())), cams) / cams
            else:
                score = s.max()
            out_boxes.append(box)
            out_scores.append(score)
            out_labels.append(label)
    if not out_boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    order = np.argsort(-np.asarray(out_scores), kind='stable')
    return (np.asarray(out_boxes, np.float32)[order], np.asarray(out_scores, np.float32)[order],
            np.asarray(out_labels, np.int64)[order])


def suppress_duplicates(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices (best score first) of the boxes kept by class-agnostic NMS at ``iou``.

    Args:
        boxes: (K, 4) float xyxy.
        scores: (K,) float.
        iou: a box overlapping a better one (any class) by more than this is dropped.
    """
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    keep = nms(torch.as_tensor(boxes, dtype=torch.float32),
               torch.as_tensor(scores, dtype=torch.float32), iou)
    return keep.numpy()

