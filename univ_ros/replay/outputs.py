"""The replay's output bag: input topics copied, perception outputs added, a few overlay PNGs.

Outputs carry the header of the reference camera image they were computed from (as the node
publishes them) and are written at that stamp, so they line up with the inputs in a viewer.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from univ_core.inference.overlay import colorize, draw_detections, to_rgb8
from univ_ros.conversions import mask_encoding
from univ_ros.messages import fill_detections
from univ_ros.replay import topics as T
from univ_ros.replay.bag_from_pairs import image_msg
from univ_ros.replay.bagio import BagOutput, msg_type, stamp_ns, typestore


def known_type(msgtype: str) -> bool:
    """True when the type store can describe ``msgtype`` (so the topic can be copied)."""
    return msgtype in typestore().types


class OutputWriter:
    """Writes outputs for each processed pair into ``bag``; keeps overlays of chosen pairs.

    Args:
        bag: the open output bag.
        palette: (C, 3) uint8 RGB colours of the segmentation classes.
        seg_classes: segmentation class names (mask encoding), or None.
        overlay_dir: where overlay PNGs go.
        overlay_indices: processed-pair indices saved as PNG.
    """

    def __init__(self, bag: BagOutput, palette: np.ndarray, seg_classes: Sequence[str] | None,
                 overlay_dir: Path, overlay_indices: Sequence[int]) -> None:
        self.bag = bag
        self.palette = palette
        self.mask_encoding = mask_encoding(len(seg_classes)) if seg_classes else 'mono8'
        self.overlay_dir = overlay_dir
        self.overlay_indices = set(overlay_indices)
        self.overlays: list[Path] = []
        self.processed = 0
        self.published = {t: 0 for t in (T.SEGMENTATION, T.SEGMENTATION_COLOR, T.DETECTIONS,
                                          T.DETECTIONS_IMAGE)}  # messages written per topic
        self.boxes = 0  # detections published (deployment threshold)
        for topic in self.published:
            bag.add_topic(topic, T.TYPES[topic])

    def copy(self, topic: str, msgtype: str, timestamp: int, raw: bytes) -> None:
        """Copy one input message (topics of unknown types are skipped)."""
        if known_type(msgtype):
            self.bag.add_topic(topic, msgtype)
            self.bag.write_raw(topic, timestamp, raw)

    def write(self, header: Any, image: np.ndarray, mask: np.ndarray | None,
              detections: Any) -> None:
        """Outputs of one pair.

        Args:
            header: rosbags Header of the reference camera image.
            image: the reference image, (H, W, 3) uint8 RGB or (H, W) thermal.
            mask: (H, W) uint8 class ids, or None (no segmentation head).
            detections: ``boxes`` (K, 4) float32 xyxy, ``scores`` (K,), ``class_names``.
        """
        stamp = stamp_ns(header)
        coloured = colorize(mask, self.palette, image) if mask is not None else None
        if mask is not None:
            self._write(T.SEGMENTATION, stamp, image_msg(mask, self.mask_encoding, header))
            self._write(T.SEGMENTATION_COLOR, stamp, image_msg(coloured, 'rgb8', header))
        empty = msg_type(T.DETECTION_ARRAY)(header=header, detections=[])
        self._write(T.DETECTIONS, stamp, fill_detections(empty, detections, header, msg_type))
        self.boxes += len(detections.boxes)
        base = coloured if coloured is not None else to_rgb8(image)
        boxed = draw_detections(base, detections.boxes, detections.class_names,
                                detections.scores)
        self._write(T.DETECTIONS_IMAGE, stamp, image_msg(boxed, 'rgb8', header))
        if self.processed in self.overlay_indices:
            path = self.overlay_dir / f'overlay_{self.processed:05d}.png'
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), cv2.cvtColor(boxed, cv2.COLOR_RGB2BGR))
            self.overlays.append(path)
        self.processed += 1

    def _write(self, topic: str, stamp: int, msg: Any) -> None:
        self.bag.write(topic, stamp, msg)
        self.published[topic] += 1


def spread(count: int, total: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)``."""
    if total <= 0 or count <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, total - 1, min(count, total))})
