"""Labelled RGB-T datasets read in their native layouts, yielding numpy samples.

Each item is a dict: 'rgb' (H, W, 3) uint8 RGB; 'thermal' (H, W) uint8 | uint16; 'mask'
(H, W) uint8 class ids (255 = ignore) or None for detection sets; 'boxes_rgb' (K, 4) float32 xyxy
pixels with 'labels_rgb' (K,) int64, and 'boxes_ir' / 'labels_ir' for the thermal image (empty
for segmentation sets); 'name' the pair's file stem. Class ids index the dataset's
`class_names`. Boxes are clipped to the image; those left with no width or height are dropped.
MSRS detection labels each modality in its own file; the other sets share one box list.
"""

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from univ_core.data.io import read_label_image
from univ_core.data.paired import PairPaths, find_pairs, load_pair

BoxSet = tuple[np.ndarray, np.ndarray]  # (K, 4) float32 xyxy pixels, (K,) int64 class ids
BoxSource = Callable[[int, int], BoxSet]  # (image width, image height) -> boxes of one image


def _box_set(rows: list[list[float]], labels: list[int]) -> BoxSet:
    return np.array(rows, np.float32).reshape(-1, 4), np.array(labels, np.int64)


def _existing(path: Path, what: str = 'label file') -> Path:
    if not path.is_file():
        raise FileNotFoundError(f'{what} {path} not found')
    return path


def read_yolo_boxes(path: Path, width: int, height: int, num_classes: int) -> BoxSet:
    """YOLO txt: one `class cx cy w h` line per box, coordinates normalised to [0, 1].

    Returns:
        (K, 4) float32 xyxy pixels of a width x height image and (K,) int64 class ids.
    """
    rows, labels = [], []
    for number, line in enumerate(_existing(path).read_text().splitlines(), start=1):
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
    return _box_set(rows, labels)


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
        root = ET.parse(_existing(path)).getroot()
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
    return _box_set(rows, labels)


def read_coco_boxes(path: Path, class_names: list[str]) -> dict[str, BoxSet]:
    """COCO instances json (`bbox` = [x, y, w, h] pixels), categories matched by name.

    Returns:
        image file stem -> ((K, 4) float32 xyxy pixels, (K,) int64 class ids), for every image
        the json lists (one without annotations gets empty arrays).
    """
    try:
        coco = json.loads(_existing(path).read_text())
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
            x, y, w, h = (float(value) for value in ann['bbox'])
            boxes, labels = rows[stems[ann['image_id']]]
            boxes.append([x, y, x + w, y + h])
            labels.append(category[ann['category_id']])
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise ValueError(f'{path} is not a COCO instances json: {error!r}') from error
    return {stem: _box_set(*pair) for stem, pair in rows.items()}


def _fixed_boxes(boxes: BoxSet, width: int, height: int) -> BoxSet:
    """A BoxSource for boxes already read (COCO json)."""
    return boxes


def _voc_source(path: Path, class_names: list[str], skipped: frozenset[str], width: int,
                height: int) -> BoxSet:
    """A BoxSource reading a VOC xml when the sample is loaded."""
    return read_voc_boxes(path, class_names, skipped)


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


@dataclass(frozen=True)
class LabelledPairFiles:
    """Where one labelled pair lives on disk."""

    pair: PairPaths  # the two images (MFNet: one 4-channel PNG named twice); name = file stem
    mask: Path | None = None  # label PNG of class ids (segmentation sets)
    boxes_rgb: BoxSource | None = None  # boxes of the RGB image (detection sets)
    boxes_ir: BoxSource | None = None  # boxes of the thermal image (detection sets)


class LabelledPairs(Dataset):
    """RGB-T pairs with masks and/or boxes; items are the numpy sample dicts described above.

    ``class_names`` name the ids of the set's task (masks of a segmentation set, boxes of a
    detection set); a set with both (``autolabel``) names its mask ids in ``seg_class_names``.
    """

    def __init__(self, items: list[LabelledPairFiles], class_names: list[str],
                 seg_class_names: list[str] | None = None,
                 palette: list[list[int]] | None = None) -> None:
        """Keep the files of each pair, the names of the class ids and the mask colours."""
        self.items = items
        self.class_names = list(class_names)
        self.seg_class_names = list(seg_class_names) if seg_class_names else None
        self.palette = palette  # RGB per mask class, where the set defines one

    def subset(self, keep: Callable[[LabelledPairFiles], bool]) -> 'LabelledPairs':
        """The pairs for which ``keep(item)`` holds, with the same class names."""
        return LabelledPairs([it for it in self.items if keep(it)], self.class_names,
                             self.seg_class_names, self.palette)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        rgb, thermal = load_pair(item.pair)  # equal sizes, else ValueError naming both files
        height, width = thermal.shape
        mask = None
        if item.mask is not None:
            mask = read_mask(item.mask, len(self.seg_class_names or self.class_names))
            if mask.shape != thermal.shape:
                raise ValueError(f'label image {item.mask} is {mask.shape} but its images are '
                                 f'{thermal.shape} (H, W)')
        sample = {'rgb': rgb, 'thermal': thermal, 'mask': mask, 'name': item.pair.name}
        for key, source in (('rgb', item.boxes_rgb), ('ir', item.boxes_ir)):
            boxes = source(width, height) if source is not None else _box_set([], [])
            sample[f'boxes_{key}'], sample[f'labels_{key}'] = clip_boxes(boxes, width, height)
        return sample


# MSRS segmentation uses MFNet's 9 classes (label ids 0-8).
MFNET_CLASSES = ('unlabeled', 'car', 'person', 'bike', 'curve', 'car_stop', 'guardrail',
                 'color_cone', 'bump')
MSRS_DET_CLASSES = ('person', 'bicycle', 'car')
M3FD_CLASSES = ('People', 'Car', 'Bus', 'Lamp', 'Motorcycle', 'Truck')
LLVIP_CLASSES = ('person',)
FLIR_CLASSES = ('person', 'bicycle', 'car')


def _masks(pairs: list[PairPaths], mask_dir: Path) -> list[LabelledPairFiles]:
    """Segmentation items: mask_dir/NAME.png for each pair."""
    return [LabelledPairFiles(p, mask=_existing(mask_dir / f'{p.name}.png', 'label image'))
            for p in pairs]


def _msrs_seg(root: Path, split: str) -> list[LabelledPairFiles]:
    """{split}/{vi,ir,Segmentation_labels}/NAME.png."""
    return _masks(find_pairs(root, 'msrs', split), root / split / 'Segmentation_labels')


def _mfnet(root: Path, split: str) -> list[LabelledPairFiles]:
    """images/NAME.png (4 channels: R, G, B, thermal), labels/NAME.png, {split}.txt names."""
    return _masks(find_pairs(root, 'mfnet', split), root / 'labels')


def _msrs_det(root: Path, split: str) -> list[LabelledPairFiles]:
    """{split}/{vi,ir}/NAME.png; YOLO boxes detection/{visible,infrared}/{split}/NAME.txt."""
    items = []
    for pair in find_pairs(root, 'msrs', split):
        rgb_txt, ir_txt = (_existing(root / 'detection' / modality / split / f'{pair.name}.txt')
                           for modality in ('visible', 'infrared'))
        count = len(MSRS_DET_CLASSES)
        items.append(LabelledPairFiles(pair, None,
                                       partial(read_yolo_boxes, rgb_txt, num_classes=count),
                                       partial(read_yolo_boxes, ir_txt, num_classes=count)))
    return items


def _shared_voc(pairs: list[PairPaths], xml_dir: Path, classes: tuple[str, ...],
                skipped: frozenset[str] = frozenset(), suffix: str = ''
                ) -> list[LabelledPairFiles]:
    """Detection items reading xml_dir/NAME{suffix}.xml, one box list for both modalities."""
    items = []
    for pair in pairs:
        xml = _existing(xml_dir / f'{pair.name}{suffix}.xml')
        source = partial(_voc_source, xml, list(classes), skipped)
        items.append(LabelledPairFiles(pair, None, source, source))
    return items


def _names_in(list_file: Path) -> list[str]:
    """Stems listed one per line in a split file (extensions, if any, dropped)."""
    lines = _existing(list_file, 'split list').read_text().splitlines()
    return [Path(line.strip()).stem for line in lines if line.strip()]


def _m3fd(root: Path, split: str) -> list[LabelledPairFiles]:
    """Vis/, Ir/ images; COCO {split}.json (root or annotations/) or VOC Annotation(s)/NAME.xml.

    VOC names come from meta/{split}.txt or {split}.txt; split 'all' takes every xml.
    """
    pairs = {pair.name: pair for pair in find_pairs(root, 'm3fd')}
    jsons = [p for p in (root / f'{split}.json', root / 'annotations' / f'{split}.json')
             if p.is_file()]
    lists = [p for p in (root / 'meta' / f'{split}.txt', root / f'{split}.txt') if p.is_file()]
    xml_dir = root / 'Annotation' if (root / 'Annotation').is_dir() else root / 'Annotations'
    if jsons:
        boxes = read_coco_boxes(jsons[0], list(M3FD_CLASSES))
        names = sorted(boxes)
    elif lists or split == 'all':
        names = _names_in(lists[0]) if lists else sorted(p.stem for p in xml_dir.glob('*.xml'))
    else:
        raise FileNotFoundError(f'M3FD split {split!r}: found none of {split}.json, '
                                f'annotations/{split}.json, meta/{split}.txt, {split}.txt in '
                                f'{root} (split "all" reads every xml)')
    missing = [name for name in names if name not in pairs]
    if missing:
        raise FileNotFoundError(f'M3FD {root}: no Vis/Ir images for {missing[:3]} '
                                f'({len(missing)} labelled names missing)')
    if not jsons:
        return _shared_voc([pairs[name] for name in names], xml_dir, M3FD_CLASSES)
    return [LabelledPairFiles(pairs[name], None, *(partial(_fixed_boxes, boxes[name]),) * 2)
            for name in names]


def _llvip(root: Path, split: str) -> list[LabelledPairFiles]:
    """visible/{split}/NAME.jpg, infrared/{split}/NAME.jpg, Annotations/NAME.xml.

    Pairs without an xml are unlabelled and left out (the shared LLVIP sample labels 9 of 32).
    """
    xml_dir = root / 'Annotations'
    pairs = [p for p in find_pairs(root, 'llvip', split) if (xml_dir / f'{p.name}.xml').is_file()]
    return _shared_voc(pairs, xml_dir, LLVIP_CLASSES)


def _flir_aligned(root: Path, split: str) -> list[LabelledPairFiles]:
    """align_{split}.txt ids; JPEGImages/ID_RGB.jpg + ID_PreviewData.jpeg (found by paired.py).

    Boxes: Annotations/ID_PreviewData.xml beside JPEGImages/ ('dog' objects skipped).
    """
    pairs = find_pairs(root, 'flir_aligned', split)
    xml_dir = pairs[0].rgb.parent.parent / 'Annotations'
    return _shared_voc(pairs, xml_dir, FLIR_CLASSES, frozenset({'dog'}), '_PreviewData')


def _autolabel_input(folder: Path) -> tuple[list[LabelledPairFiles], tuple]:
    """One ``univ autolabel`` input folder: pairs.json, labels/{visible,infrared}, masks/."""
    try:
        pairs = json.loads(_existing(folder / 'pairs.json', 'autolabel pair list').read_text())
        classes = json.loads(_existing(folder / 'provenance.json', 'autolabel provenance')
                             .read_text())['classes']
        names = (list(classes['detection']), list(classes['segmentation']),
                 classes.get('palette'))
        det = names[0]
        items = []
        for entry in pairs['pairs']:
            name = entry['name']
            pair = PairPaths(Path(entry['rgb']), Path(entry['ir']), name)
            txts = [_existing(folder / 'labels' / m / f'{name}.txt')
                    for m in ('visible', 'infrared')]
            mask = folder / 'masks' / f'{name}.png' if entry.get('mask') else None
            items.append(LabelledPairFiles(
                pair, _existing(mask, 'label image') if mask else None,
                *(partial(read_yolo_boxes, t, num_classes=len(det)) for t in txts)))
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f'{folder}: not a univ autolabel output ({err!r})') from err
    return items, names


def open_autolabel(root: str | Path) -> LabelledPairs:
    """Labels written by ``univ autolabel``: one input's folder, or the --out folder of many.

    Items carry the boxes of both modalities and the mask; ``class_names`` are the detection
    classes and ``seg_class_names`` the mask's.
    """
    root = Path(root)
    folders = [root] if (root / 'pairs.json').is_file() else sorted(
        p.parent for p in root.glob('*/pairs.json'))
    if not folders:
        raise FileNotFoundError(f'{root}: no univ autolabel output (pairs.json) in it or its '
                                'subfolders')
    items, names = [], None
    for folder in folders:
        found, found_names = _autolabel_input(folder)
        if names not in (None, found_names):
            raise ValueError(f'{folder}: its classes {found_names} differ from {names}')
        names = found_names
        items += found
    return LabelledPairs(items, *names)


LAYOUTS = {  # format -> (lister of labelled pairs, class names)
    'msrs_seg': (_msrs_seg, MFNET_CLASSES),
    'mfnet': (_mfnet, MFNET_CLASSES),
    'msrs_det': (_msrs_det, MSRS_DET_CLASSES),
    'm3fd': (_m3fd, M3FD_CLASSES),
    'llvip': (_llvip, LLVIP_CLASSES),
    'flir_aligned': (_flir_aligned, FLIR_CLASSES),
}


def open_labelled_dataset(root: str | Path, format: str, split: str) -> LabelledPairs:
    """A labelled dataset in its native layout (each lister's docstring names the files read).

    Args:
        root: the dataset's top folder.
        format: 'msrs_seg', 'mfnet', 'msrs_det', 'm3fd', 'llvip' or 'flir_aligned'.
        split: e.g. 'train' / 'test'; MFNet also 'val'; FLIR 'train' / 'validation' ('val').

    Returns:
        LabelledPairs yielding numpy sample dicts; its `class_names` name the class ids.
    """
    if format == 'autolabel':
        return open_autolabel(root)
    if format not in LAYOUTS:
        raise ValueError(f'unknown dataset format {format!r}; expected one of '
                         f"{[*LAYOUTS, 'autolabel']}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f'dataset folder {root} not found')
    list_items, class_names = LAYOUTS[format]
    items = list_items(root, split)
    if not items:
        raise ValueError(f'no labelled pairs in {root} ({format}, split {split!r})')
    return LabelledPairs(items, list(class_names))
