"""Label files in their native formats: YOLO txt, Pascal VOC xml, COCO json boxes; PNG masks.

Boxes come back as a :data:`BoxSet` in image pixels (xyxy float32, int64 class ids); readers
name the file and what was expected when one is missing or malformed.
"""

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import numpy as np

from univ_core.data.io import read_label_image

BoxSet = tuple[np.ndarray, np.ndarray]  # (K, 4) float32 xyxy pixels, (K,) int64 class ids
BoxSource = Callable[[int, int], BoxSet]  # (image width, image height) -> boxes of one image


def box_set(rows: list[list[float]], labels: list[int]) -> BoxSet:
    """A BoxSet from lists (empty lists: no boxes)."""
    return np.array(rows, np.float32).reshape(-1, 4), np.array(labels, np.int64)


def existing_file(path: Path, what: str = 'label file') -> Path:
    """``path`` if it is a file, else FileNotFoundError naming ``what`` it should hold."""
    if not path.is_file():
        raise FileNotFoundError(f'{what} {path} not found')
    return path


def read_yolo_boxes(path: Path, width: int, height: int, num_classes: int) -> BoxSet:
    """YOLO txt: one `class cx cy w h` line per box, coordinates normalised to [0, 1].

    Returns:
        (K, 4) float32 xyxy pixels of a width x height image and (K,) int64 class ids.
    """
    rows, labels = [], []
    for number, line in enumerate(existing_file(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values = [float(field) for field in line.split()]
        except ValueError:
            values = []
        if len(values) != 5 or not values[0].is_integer():
            raise ValueError(f'{path}:{number}: expected "class cx cy w h", got {line!r}')
        if not 0 <= values[0] < num_classes:
            raise ValueError(f'{path}:{number}: class id {int(values[0])} outside '
                             f'[0, {num_classes})')
        cx, cy, w, h = values[1:]
        rows.append([(cx - w / 2) * width, (cy - h / 2) * height,
                     (cx + w / 2) * width, (cy + h / 2) * height])
        labels.append(int(values[0]))
    return box_set(rows, labels)


def _class_ids(class_names: list[str]) -> dict[str, int]:
    """Lower-cased class name -> class id (datasets spell names with varying case)."""
    return {name.lower(): index for index, name in enumerate(class_names)}


def read_voc_boxes(path: Path, class_names: list[str],
                   skipped: frozenset[str] = frozenset()) -> BoxSet:
    """Pascal VOC xml: `object/name` and `object/bndbox/{xmin,ymin,xmax,ymax}` in pixels.

    Args:
        path: the xml file.
        class_names: names of the class ids, matched case-insensitively.
        skipped: lower-case object names left out (FLIR's 'dog').

    Returns:
        (K, 4) float32 xyxy pixels (the values as written) and (K,) int64 class ids.
    """
    try:
        root = ET.parse(existing_file(path)).getroot()
    except ET.ParseError as error:
        raise ValueError(f'annotation file {path} is not valid xml: {error}') from error
    ids = _class_ids(class_names)
    rows, labels = [], []
    for number, obj in enumerate(root.iter('object'), start=1):
        name = (obj.findtext('name') or '').strip().lower()
        if name in skipped:
            continue
        if name not in ids:
            raise ValueError(f'{path}: object {number} has class {name!r}, expected one of '
                             f'{class_names}')
        try:
            box = obj.find('bndbox')
            rows.append([float(box.findtext(key)) for key in ('xmin', 'ymin', 'xmax', 'ymax')])
        except (AttributeError, TypeError, ValueError) as error:
            raise ValueError(f'{path}: object {number} lacks a numeric bndbox') from error
        labels.append(ids[name])
    return box_set(rows, labels)


def read_coco_boxes(path: Path, class_names: list[str]) -> dict[str, BoxSet]:
    """COCO instances json (`bbox` = [x, y, w, h] pixels), categories matched by name.

    Returns:
        image file stem -> ((K, 4) float32 xyxy pixels, (K,) int64 class ids), for every image
        the json lists (one without annotations gets empty arrays).
    """
    try:
        coco = json.loads(existing_file(path).read_text())
        ids = _class_ids(class_names)
        unknown = [c['name'] for c in coco['categories'] if str(c['name']).lower() not in ids]
        if unknown:
            raise ValueError(f'{path}: categories {unknown} are not in {class_names}')
        category = {c['id']: ids[str(c['name']).lower()] for c in coco['categories']}
        stems = {image['id']: Path(image['file_name']).stem for image in coco['images']}
        rows: dict[str, tuple[list, list]] = {stem: ([], []) for stem in stems.values()}
        for number, ann in enumerate(coco['annotations'], start=1):
            if ann['image_id'] not in stems or ann['category_id'] not in category:
                raise ValueError(f'{path}: annotation {number} names an unknown image '
                                 f'{ann["image_id"]} or category {ann["category_id"]}')
            try:
                x, y, w, h = (float(value) for value in ann['bbox'])
            except ValueError as error:  # a non-numeric or short bbox
                raise ValueError(f'{path}: annotation {number} has bbox {ann["bbox"]!r}, '
                                 'expected 4 numbers [x, y, w, h]') from error
            boxes, labels = rows[stems[ann['image_id']]]
            boxes.append([x, y, x + w, y + h])
            labels.append(category[ann['category_id']])
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise ValueError(f'{path} is not a COCO instances json: {error!r}') from error
    return {stem: box_set(*pair) for stem, pair in rows.items()}


def clip_boxes(boxes: BoxSet, width: int, height: int) -> BoxSet:
    """Clip xyxy boxes to a width x height image; drop those left with no width or height."""
    xyxy, labels = boxes
    clipped = xyxy.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return clipped[keep], labels[keep]


def read_mask(path: Path, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """Label PNG of class ids -> (H, W) uint8; values must be < num_classes or ignore_index."""
    mask = read_label_image(path)
    if mask.ndim == 3 and (mask == mask[..., :1]).all():
        mask = mask[..., 0]  # (H, W): ids saved as an equal-channel colour image
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f'label image {path} must be one 8-bit channel of class ids, got '
                         f'shape {mask.shape} dtype {mask.dtype}')
    bad = (mask >= num_classes) & (mask != ignore_index)
    if bad.any():
        raise ValueError(f'label image {path} holds class ids {np.unique(mask[bad]).tolist()} '
                         f'outside [0, {num_classes}) (ignore value {ignore_index})')
    return mask
