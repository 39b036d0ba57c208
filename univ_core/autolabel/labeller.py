"""Labels of one aligned RGB-thermal pair from the RGB teachers (numpy in, numpy out).

The pair shares one pixel grid, so a label made on the RGB image is a label of the thermal
image too. Boxes: the detector runs on the RGB image; with ``thermal_detector`` it also runs on
the thermal image (grey replicated to 3 channels), and the thermal labels are the two teachers'
boxes merged by weighted box fusion (best score kept): people the RGB camera cannot see at night
are still labelled on the thermal image. The RGB labels come from the RGB image only (an object
invisible in RGB is not an RGB label, as in MSRS-detection). Masks: the segmenter on the RGB
image, mapped to package classes; pixels it is unsure of, and every pixel of a night frame
(where it hallucinates), are ignored (255) on both images.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

from univ_core.autolabel.config import IGNORE, AutolabelConfig, ClassTable
from univ_core.inference.box_fusion import fuse_boxes


@dataclass
class PairLabels:
    """Per-modality boxes (package class ids) and one mask of a pair."""

    boxes_rgb: np.ndarray  # (K, 4) float32 xyxy pixels
    labels_rgb: np.ndarray  # (K,) int64
    scores_rgb: np.ndarray  # (K,) float32 (1 for real labels)
    boxes_ir: np.ndarray  # (M, 4) float32
    labels_ir: np.ndarray  # (M,) int64
    scores_ir: np.ndarray  # (M,) float32
    mask: np.ndarray | None  # (H, W) uint8 package ids, 255 ignored; None: no segmenter
    night: bool  # the RGB frame is too dark for the segmenter
    boxes_from: str  # 'teacher' | 'real'
    teacher: dict  # raw_boxes() before the label threshold (empty without a detector)


def is_night(rgb: np.ndarray, config: AutolabelConfig) -> bool:
    """Whether a (H, W, 3) uint8 RGB frame is too dark for a daytime teacher.

    Night: mean Rec. 601 luma below ``night_luminance``, or a top third (the sky) darker than
    the whole frame by ``night_sky_ratio`` (auto-exposed night frames: bright streets, black
    sky). On the shared data it agrees with every MSRS 'N' name and a visual check of 20
    RoadScene frames; dim day frames under trees count as night (no masks: conservative).
    """
    luma = rgb[::2, ::2].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    mean = float(luma.mean())
    sky = float(luma[: luma.shape[0] // 3].mean())
    return mean < config.night_luminance or sky < config.night_sky_ratio * mean


def teacher_boxes(detector: Any, image: np.ndarray, lookup: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The detector's boxes mapped to package classes (others dropped): boxes, scores, ids."""
    boxes, scores, ids = detector.detect(image)
    mapped = lookup[ids] if len(ids) else np.zeros(0, np.int64)
    keep = mapped >= 0
    return boxes[keep], scores[keep], mapped[keep]


def _cut(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, threshold: float):
    keep = scores >= threshold
    return boxes[keep].astype(np.float32), labels[keep].astype(np.int64), scores[keep]


class Labeller:
    """Runs the teachers on pairs.

    Args:
        config: thresholds and switches.
        table: teacher -> package classes.
        detector: an object with ``detect`` and ``classes`` (teachers module), or None.
        segmenter: an object with ``segment`` and ``classes``, or None.
    """

    def __init__(self, config: AutolabelConfig, table: ClassTable, detector: Any = None,
                 segmenter: Any = None) -> None:
        self.config, self.table = config, table
        self.detector, self.segmenter = detector, segmenter
        self.det_lookup = table.det_lookup(detector.classes) if detector else None
        self.seg_lookup = table.seg_lookup(segmenter.classes) if segmenter else None

    def raw_boxes(self, rgb: np.ndarray, thermal: np.ndarray) -> dict[str, tuple]:
        """Teacher boxes before the label threshold, each (boxes, scores, package ids).

        Keys: 'rgb' (RGB image), 'thermal' (thermal image) and 'merged' (the two fused), the
        last two with ``thermal_detector`` only.
        """
        rgb_boxes = teacher_boxes(self.detector, rgb, self.det_lookup)
        out = {'rgb': rgb_boxes}
        if self.config.thermal_detector:
            grey = thermal_as_rgb(thermal)
            out['thermal'] = teacher_boxes(self.detector, grey, self.det_lookup)
            out['merged'] = fuse_boxes([rgb_boxes[0], out['thermal'][0]],
                                       [rgb_boxes[1], out['thermal'][1]],
                                       [rgb_boxes[2], out['thermal'][2]],
                                       iou=self.config.merge_iou, rule='max')
        return out

    def label(self, rgb: np.ndarray, thermal: np.ndarray) -> PairLabels:
        """Teacher labels of one pair: (H, W, 3) uint8 RGB and (H, W) thermal of that size."""
        cut = self.config.box_threshold
        empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32))
        rgb_set = ir_set = empty
        raw: dict = {}
        if self.detector is not None:
            raw = self.raw_boxes(rgb, thermal)
            rgb_set = _cut(*raw['rgb'], cut)
            ir_set = _cut(*raw.get('merged', raw['rgb']), cut)
        night = is_night(rgb, self.config)
        mask = None
        if self.segmenter is not None:
            mask = np.full(rgb.shape[:2], IGNORE, np.uint8)
            if not night:
                ids, confidence = self.segmenter.segment(rgb)
                mask = self.seg_lookup[ids]
                mask[confidence < self.config.seg_confidence] = IGNORE
        return PairLabels(*rgb_set, *ir_set, mask, night, 'teacher', raw)


def thermal_as_rgb(thermal: np.ndarray) -> np.ndarray:
    """(H, W) uint8 | uint16 | float thermal -> (H, W, 3) uint8 grey for an RGB teacher."""
    from univ_core.data.transforms import thermal_to_unit

    unit = thermal_to_unit(thermal)
    grey = np.round(unit * 255.0).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)
