"""Ground truth for fused (RGB + thermal) detections of pixel-aligned pairs."""

import numpy as np

SAME_OBJECT_IOU = 0.5  # a thermal box this close to an RGB box of its class is the same object


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (N, 4) and (M, 4) xyxy boxes -> (N, M) float64."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)  # (N, M)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)  # (N,)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)  # (M,)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def fused_truth(rgb: dict, thermal: dict) -> dict:
    """Objects seen by either camera: the RGB boxes plus the thermal boxes of other objects.

    Args:
        rgb: {'boxes': (K, 4) float32 xyxy pixels, 'labels': (K,) int64} of the RGB image.
        thermal: the same for the (pixel-aligned) thermal image.
    """
    iou = box_iou(thermal['boxes'], rgb['boxes'])  # (Kt, Kr)
    same_class = thermal['labels'][:, None] == rgb['labels'][None, :]
    new = ~((iou >= SAME_OBJECT_IOU) & same_class).any(axis=1) if iou.size else \
        np.ones(len(thermal['labels']), bool)
    return {'boxes': np.concatenate([rgb['boxes'], thermal['boxes'][new]]).reshape(-1, 4),
            'labels': np.concatenate([rgb['labels'], thermal['labels'][new]])}
