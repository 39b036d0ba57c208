"""RGB-T datasets as a stream of pairs for ``univ bag-from-pairs`` (labels when there are any).

A labelled layout (:func:`univ_core.data.labelled.open_labelled_dataset`) is used when its
labels are on disk; otherwise the same images are read as plain pairs
(:func:`univ_core.data.paired.find_pairs`). MSRS with both detection boxes and segmentation
labels gives both kinds of ground truth.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from univ_core.data.io import read_pair

# --format -> labelled layouts tried in order (their labels must exist), unlabelled layout
LAYOUTS: dict[str, tuple[tuple[str, ...], str]] = {
    'msrs': (('msrs_det', 'msrs_seg'), 'msrs'),
    'llvip': (('llvip',), 'llvip'),
    'm3fd': (('m3fd',), 'm3fd'),
    'mfnet': (('mfnet',), 'mfnet'),
    'flir_aligned': (('flir_aligned',), 'flir_aligned'),
    'roadscene': ((), 'roadscene'),
    'kaist': ((), 'kaist'),
    'folder': ((), 'folder'),
}
FORMATS = ('auto', *LAYOUTS)  # auto: univ_core.data.paired.detect_layout
SPLIT_LAYOUTS = ('llvip', 'msrs', 'kaist', 'mfnet', 'flir_aligned')  # unlabelled, with splits


@dataclass
class SampleSource:
    """Pairs in a fixed order, with the class names of their labels.

    Each sample is a dict: 'rgb' (H, W, 3) uint8, 'thermal' (H, W) uint8 | uint16, 'name';
    with detection labels 'boxes_rgb' / 'boxes_ir' (K, 4) float32 xyxy pixels and
    'labels_rgb' / 'labels_ir' (K,) int64; with segmentation labels 'mask' (H, W) uint8.
    """

    loaders: Sequence  # index -> sample dict (a dataset), one per kind of label
    size: int  # number of pairs used
    det_classes: list[str] | None  # detection class names, or None (no boxes)
    seg_classes: list[str] | None  # segmentation class names, or None (no masks)
    source: str  # what was read, for messages

    def __len__(self) -> int:
        return self.size

    @property
    def samples(self) -> Iterator[dict]:
        """The samples in order (labels of every kind merged into one dict per pair)."""
        for index in range(self.size):
            sample: dict = {}
            for loader in self.loaders:
                item = loader[index]
                if sample and item['name'] != sample['name']:
                    raise ValueError(f'{self.source}: pair {index} is {sample["name"]!r} in one '
                                     f'label set and {item["name"]!r} in another')
                sample.update({k: v for k, v in item.items() if v is not None})
            yield sample


class _PlainPairs:
    """Unlabelled pairs from :func:`univ_core.data.paired.find_pairs`."""

    def __init__(self, pairs: list) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[index]  # PairPaths: rgb, ir, name
        rgb, thermal = read_pair(pair.rgb, pair.ir, pair.name)
        return {'rgb': rgb, 'thermal': thermal, 'name': pair.name}


def _labelled(root: Path, layouts: tuple[str, ...], split: str) -> list[tuple[str, object]]:
    """(layout, dataset) for each labelled layout whose labels exist."""
    from univ_core.data.labelled import open_labelled_dataset

    found = []
    for layout in layouts:
        try:
            found.append((layout, open_labelled_dataset(root, layout, split)))
        except FileNotFoundError:
            continue  # this kind of label is not on disk
    return found


def _plain(root: Path, layout: str, split: str, held_out: bool) -> _PlainPairs:
    from univ_core.data.paired import find_pairs

    pairs = find_pairs(root, layout, split if layout in SPLIT_LAYOUTS else None)
    return _PlainPairs([p for p in pairs if _held_out(p.name)] if held_out else pairs)


def _held_out(name: str) -> bool:
    from univ_core.data.evaluation_pairs import is_evaluation_pair

    return is_evaluation_pair(name)


def resolve_format(root: Path, fmt: str) -> str:
    """``fmt``, or for 'auto' the layout :func:`univ_core.data.paired.detect_layout` sees."""
    if fmt != 'auto':
        return fmt
    from univ_core.data.paired import detect_layout

    layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise ValueError(f'{root} looks like {layout}, which bag-from-pairs does not read; '
                         f'expected one of {tuple(LAYOUTS)}')
    return layout


def open_samples(root: Path, fmt: str, split: str = 'train',
                 limit: int | None = None, held_out: bool = False) -> SampleSource:
    """The pairs of dataset ``root`` in layout ``fmt`` (see FORMATS), labels included.

    ``held_out``: only the project's evaluation pairs (univ_core/data/evaluation_pairs.py),
    which no shipped model was trained on.

    Raises:
        FileNotFoundError: ``root`` or its images missing.
        ValueError: unknown ``fmt``; labelled layouts of different pair counts.
    """
    if fmt not in FORMATS:
        raise ValueError(f'--format: expected one of {tuple(FORMATS)}, got {fmt!r}')
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f'dataset folder {root} not found')
    if limit is not None and limit < 1:
        raise ValueError(f'--limit must be >= 1, got {limit}')
    fmt = resolve_format(root, fmt)
    layouts, plain = LAYOUTS[fmt]
    found = _labelled(root, layouts, split)
    if held_out:
        found = [(name, d.subset(lambda item: _held_out(item.pair.name))) for name, d in found]
    det = next((list(d.class_names) for name, d in found if not _is_seg(name)), None)
    seg = next((list(d.class_names) for name, d in found if _is_seg(name)), None)
    loaders = [d for _, d in found] or [_plain(root, plain, split, held_out)]
    sizes = {len(loader) for loader in loaders}
    if len(sizes) != 1:
        raise ValueError(f'{root}: the label sets {[n for n, _ in found]} hold different pair '
                         f'counts {sorted(sizes)}')
    size = min(sizes.pop(), limit or 10**12)
    if size == 0:
        raise FileNotFoundError(f'no image pairs found in {root} ({fmt}, split {split}'
                                f'{", evaluation pairs only" if held_out else ""})')
    return SampleSource(loaders, size, det, seg, f'{root} ({fmt}, {split})')


def _is_seg(layout: str) -> bool:
    return layout in ('msrs_seg', 'mfnet')
