"""What `univ autolabel` reads: pairs of a dataset folder (any native layout) or of a bag.

A bag's synchronised pairs are decoded through ``univ_ros`` (the node's synchroniser and
conversions; rosbags, no ROS install) and written as PNG pairs under ``<out>/images`` so that
training can read them. Real labels of a layout (MSRS-detection txt per modality, LLVIP's VOC
xml for both images) come with their pair, mapped to the package classes by name.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from univ_core.data.label_files import BoxSet, clip_boxes, read_voc_boxes, read_yolo_boxes
from univ_core.data.labelled import LLVIP_CLASSES, MSRS_DET_CLASSES
from univ_core.data.paired import PairPaths, detect_layout, find_pairs, load_pair
from univ_core.fleet.inputs import is_bag


@dataclass
class RealBoxes:
    """Human boxes of one pair, class names as the dataset spells them."""

    rgb: BoxSet  # (K, 4) float32 xyxy pixels, (K,) int64 ids into ``classes``
    ir: BoxSet
    classes: tuple[str, ...]


@dataclass
class InputPair:
    """One pair to label."""

    pair: PairPaths  # where its images are
    real: Callable[[int, int], RealBoxes] | None = None  # (width, height) -> its real boxes

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 RGB and (H, W) thermal."""
        return load_pair(self.pair)


def _msrs_real(txt_rgb: Path, txt_ir: Path, width: int, height: int) -> RealBoxes:
    n = len(MSRS_DET_CLASSES)
    return RealBoxes(read_yolo_boxes(txt_rgb, width, height, n),
                     read_yolo_boxes(txt_ir, width, height, n), MSRS_DET_CLASSES)


def _llvip_real(xml: Path, width: int, height: int) -> RealBoxes:
    boxes = clip_boxes(read_voc_boxes(xml, list(LLVIP_CLASSES)), width, height)
    return RealBoxes(boxes, boxes, LLVIP_CLASSES)  # LLVIP: one box file for both images


def _real_labels(pair: PairPaths, layout: str, root: Path) -> Callable | None:
    """The reader of a pair's real boxes where its layout has them on disk, else None."""
    if layout == 'msrs':
        split = pair.rgb.parent.parent.name  # root/{split}/vi/NAME.png
        stem = pair.rgb.stem
        txts = [root / 'detection' / m / split / f'{stem}.txt' for m in ('visible', 'infrared')]
        return partial(_msrs_real, *txts) if all(p.is_file() for p in txts) else None
    if layout == 'llvip':
        xml = root / 'Annotations' / f'{pair.rgb.stem}.xml'
        return partial(_llvip_real, xml) if xml.is_file() else None
    return None


def folder_pairs(root: Path, layout: str = 'auto', split: str | None = None,
                 real_labels: bool = True) -> list[InputPair]:
    """Every pair of a dataset folder, with its real boxes where the layout has them."""
    layout = detect_layout(root) if layout == 'auto' else layout
    pairs = find_pairs(root, layout, split)
    return [InputPair(p, _real_labels(p, layout, root) if real_labels else None) for p in pairs]


def bag_pairs(bag: Path, images: Path, progress: bool = True,
              topics: tuple[str, str] | None = None) -> tuple[list[InputPair], str | None]:
    """A bag's synchronised pairs, written to ``images/{vi,ir}/<rgb stamp ns>.png``.

    ``topics``: its (RGB, thermal) camera topics, raw or compressed (None: the replay's).

    Returns:
        The pairs, and for a damaged bag what stopped the reading (the pairs read before the
        damage are kept, as ``univ replay`` keeps them), else None.
    """
    try:
        from univ_ros.replay.bag_pairs import iter_bag_pairs
        from univ_ros.replay.bagio import BagReadError
    except ImportError as err:
        raise ValueError(f'{bag}: reading bags needs univ_ros (pip install -e . with its '
                         f'dependencies): {err}') from err
    (images / 'vi').mkdir(parents=True, exist_ok=True)
    (images / 'ir').mkdir(parents=True, exist_ok=True)
    out, damage = [], None
    pairs = tqdm(iter_bag_pairs(bag, *(topics or ())), desc=f'pairs of {bag.name}',
                 unit='pair', leave=False, disable=not progress)
    try:
        for name, rgb, thermal in pairs:
            out.append(_write_pair(images, name, rgb, thermal))
    except BagReadError as err:
        if not out:
            raise
        damage = str(err)
    if not out:
        raise ValueError(f'{bag}: no synchronised RGB-thermal pair in the bag')
    return out, damage


def _write_pair(images: Path, name: str, rgb: np.ndarray, thermal: np.ndarray) -> InputPair:
    """One decoded pair as ``images/{vi,ir}/<name>.png``."""
    paths = images / 'vi' / f'{name}.png', images / 'ir' / f'{name}.png'
    if thermal.dtype == np.float32:  # PNG holds no floats: keep the node's [0, 1] view
        from univ_core.data.transforms import thermal_to_unit

        thermal = np.round(thermal_to_unit(thermal) * 65535).astype(np.uint16)
    for path, image in zip(paths, (rgb[..., ::-1], thermal), strict=True):
        if not cv2.imwrite(str(path), np.ascontiguousarray(image)):
            raise OSError(f'cannot write {path}')
    return InputPair(PairPaths(*paths, name))


def is_input(path: Path) -> bool:
    """One autolabel input: a bag, or a folder in a native layout (``detect_layout`` knows it)."""
    if is_bag(path):
        return True
    try:
        detect_layout(path)
    except (FileNotFoundError, ValueError):  # not a folder, or no layout's folders in it
        return False
    return True


def open_input(source: str | Path, layout: str, split: str | None, staging: Path,
               real_labels: bool = True, progress: bool = True,
               topics: tuple[str, str] | None = None) -> tuple[list[InputPair], str | None]:
    """The pairs of one input: a bag (written under ``staging/images``) or a dataset folder.

    ``topics``: a bag's (RGB, thermal) camera topics (None: the replay's defaults).

    Returns:
        The pairs, and what stopped the reading of a damaged bag (else None).
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f'autolabel input {source} not found')
    if is_bag(source):
        return bag_pairs(source, staging / 'images', progress, topics)
    return folder_pairs(source, layout, split, real_labels), None
