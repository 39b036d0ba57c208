"""Labelled RGB-T datasets read in their native layouts, yielding numpy samples.

Each item is a dict: 'rgb' (H, W, 3) uint8 RGB; 'thermal' (H, W) uint8 | uint16; 'mask'
(H, W) uint8 class ids (255 = ignore) or None for detection sets; 'boxes_rgb' (K, 4) float32 xyxy
pixels with 'labels_rgb' (K,) int64, and 'boxes_ir' / 'labels_ir' for the thermal image (empty
for segmentation sets); 'name' the pair's file stem. Class ids index the dataset's
`class_names`. Boxes are clipped to the image; those left with no width or height are dropped.
MSRS detection labels each modality in its own file; the other sets share one box list.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from torch.utils.data import Dataset

from univ_core.data.label_files import (
    BoxSet,
    BoxSource,
    box_set,
    clip_boxes,
    existing_file,
    read_coco_boxes,
    read_mask,
    read_voc_boxes,
    read_yolo_boxes,
)
from univ_core.data.paired import PairPaths, find_pairs, load_pair


def _fixed_boxes(boxes: BoxSet, width: int, height: int) -> BoxSet:
    """A BoxSource for boxes already read (COCO json)."""
    return boxes


def _voc_source(path: Path, class_names: list[str], skipped: frozenset[str], width: int,
                height: int) -> BoxSet:
    """A BoxSource reading a VOC xml when the sample is loaded."""
    return read_voc_boxes(path, class_names, skipped)


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
            boxes = source(width, height) if source is not None else box_set([], [])
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
    return [LabelledPairFiles(p, mask=existing_file(mask_dir / f'{p.name}.png', 'label image'))
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
        rgb_txt, ir_txt = (
            existing_file(root / 'detection' / modality / split / f'{pair.name}.txt')
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
        xml = existing_file(xml_dir / f'{pair.name}{suffix}.xml')
        source = partial(_voc_source, xml, list(classes), skipped)
        items.append(LabelledPairFiles(pair, None, source, source))
    return items


def _names_in(list_file: Path) -> list[str]:
    """Stems listed one per line in a split file (extensions, if any, dropped)."""
    lines = existing_file(list_file, 'split list').read_text().splitlines()
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


def _listed(folder: Path, path: str) -> Path:
    """An image path of pairs.json: a bag's images relative to the folder, a dataset's absolute.

    Outputs written before stored paths relative to where autolabel ran: found from here.
    """
    inside = folder / path  # an absolute ``path`` stays as it is
    return inside if inside.exists() or not Path(path).exists() else Path(path)


def _autolabel_input(folder: Path) -> tuple[list[LabelledPairFiles], tuple]:
    """One ``univ autolabel`` input folder: pairs.json, labels/{visible,infrared}, masks/."""
    try:
        pairs = json.loads(existing_file(folder / 'pairs.json', 'autolabel pair list').read_text())
        classes = json.loads(existing_file(folder / 'provenance.json', 'autolabel provenance')
                             .read_text())['classes']
        names = (list(classes['detection']), list(classes['segmentation']),
                 classes.get('palette'))
        det = names[0]
        items = []
        for entry in pairs['pairs']:
            name = entry['name']
            pair = PairPaths(_listed(folder, entry['rgb']), _listed(folder, entry['ir']), name)
            txts = [existing_file(folder / 'labels' / m / f'{name}.txt')
                    for m in ('visible', 'infrared')]
            mask = folder / 'masks' / f'{name}.png' if entry.get('mask') else None
            items.append(LabelledPairFiles(
                pair, existing_file(mask, 'label image') if mask else None,
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
    summary = root / 'summary.json'
    if len(folders) > 1 and summary.is_file():
        # a fleet's --out: the inputs of its last run only; a folder an earlier run wrote for
        # an input since renamed (two inputs of one name get path hashes) would count it twice
        rows = json.loads(summary.read_text()).get('rows', [])
        current = {r.get('output') for r in rows if r.get('status') != 'error'}
        folders = [f for f in folders if f.name in current]
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
