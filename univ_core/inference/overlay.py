"""Pictures for people: class-colour overlays and boxes (numpy + OpenCV, no torch)."""

import cv2
import numpy as np


def default_palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 distinct colours; class 0 (usually 'unlabeled') is black."""
    if num_classes == 0:
        return np.zeros((0, 3), np.uint8)
    hues = (np.arange(num_classes) * 137.508) % 180  # golden-angle hue steps, OpenCV hue units
    hsv = np.stack([hues, np.full(num_classes, 200), np.full(num_classes, 255)], -1)
    rgb = cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2RGB)[0]
    rgb[0] = 0
    return rgb


def colorize(mask: np.ndarray, palette: np.ndarray, image: np.ndarray | None = None,
             alpha: float = 0.5) -> np.ndarray:
    """Colour a class-id mask, optionally blended over an image.

    Args:
        mask: (H, W) uint8/uint16 class ids; ids beyond the palette (e.g. 255) stay uncoloured.
        palette: (C, 3) uint8 RGB.
        image: (H, W, 3) uint8 RGB or (H, W) grey/16-bit to blend over, or None.
        alpha: weight of the class colour.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    lut = np.zeros((max(int(mask.max()) + 1, len(palette)), 3), np.uint8)
    lut[: len(palette)] = palette
    colour = lut[mask]
    if image is None:
        return colour
    base = to_rgb8(image)
    labelled = (mask < len(palette))[..., None]
    blend = (alpha * colour + (1 - alpha) * base).astype(np.uint8)
    return np.where(labelled, blend, base)


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an RGB image or a grey/16-bit/float thermal image (min-max)."""
    if image.ndim == 3:
        return image
    if image.dtype != np.uint8:
        lo, hi = np.percentile(image, (1, 99))
        image = np.clip((image.astype(np.float32) - lo) / max(hi - lo, 1e-6) * 255, 0, 255)
        image = image.astype(np.uint8)
    return np.repeat(image[..., None], 3, axis=2)


def draw_detections(image: np.ndarray, boxes: np.ndarray, names: list[str], scores: np.ndarray,
                    colour: tuple[int, int, int] = (255, 220, 0)) -> np.ndarray:
    """A copy of ``image`` (as RGB) with xyxy ``boxes`` and 'name score' labels drawn."""
    out = to_rgb8(image).copy()
    for (x0, y0, x1, y1), name, score in zip(boxes.astype(int), names, scores, strict=True):
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, 2)
        cv2.putText(out, f'{name} {score:.2f}', (x0, max(y0 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, colour, 1, cv2.LINE_AA)
    return out
