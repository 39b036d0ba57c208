"""Registered RGB-thermal pairs for PCCL pre-training: finders for native layouts and a dataset.

``find_pairs(root, layout, split)`` reads the layouts of ``LAYOUTS`` (what each root holds),
matching the two images by file stem. Names are stems (KAIST: ``setXX_VYYY_IZZZZZ``, FLIR:
``FLIR_xxxxx``), or ``split/stem`` when ``split`` is None on a layout with splits (llvip, msrs,
mvip). MFNet pairs name one 4-channel PNG twice (``rgb == ir``).
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from univ_core.data.io import read_pair
from univ_core.data.thermal import ThermalNorm
from univ_core.data.transforms import (
    PairedRandomResizedCrop,
    rgb_to_tensor,
    thermal_to_tensor,
    thermal_to_unit,
)

IMAGE_SUFFIXES = frozenset({'.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff'})
LAYOUTS = {  # layout -> what its root must hold (named in errors)
    'folder': 'vi/ and ir/',
    'roadscene': 'crop_LR_visible/ and cropinfrared/ (or vi/ and ir/)',
    'llvip': 'visible/{train,test}/ and infrared/{train,test}/',
    'msrs': '{train,test}/vi/ and {train,test}/ir/',
    'm3fd': 'Vis/ and Ir/',
    'mvip': 'vi_images/{training,validation}/ and images/{...}/ (official UNIV MVIP folders)',
    'flir_aligned': '[align/]JPEGImages/ with FLIR_*_RGB.jpg + FLIR_*_PreviewData.jpeg',
    'kaist': '[images/]setXX/VYYY/visible/ and .../lwir/',
    'mfnet': 'images/*.png (4-channel) and {train,val,test}.txt',
}
_DIR_PAIRS = {  # layout -> candidate (rgb dir, ir dir) templates; the first existing one is used
    'folder': [('vi', 'ir')],
    'roadscene': [('crop_LR_visible', 'cropinfrared'), ('vi', 'ir')],
    'm3fd': [('Vis', 'Ir')],
    'llvip': [('visible/{split}', 'infrared/{split}')],
    'msrs': [('{split}/vi', '{split}/ir')],
    'mvip': [('vi_images/{split}', 'images/{split}')],
}
_SPLITS = {'llvip': ('train', 'test'), 'msrs': ('train', 'test'),
           'mvip': ('training', 'validation')}
_SPLIT_ALIASES = {'train': 'training', 'val': 'validation'}  # mvip only
_KAIST_SETS = {'train': range(0, 6), 'test': range(6, 12)}
_FLIR_LISTS = {'train': 'train', 'val': 'validation', 'validation': 'validation',
               'test': 'validation'}


@dataclass(frozen=True)
class PairPaths:
    """Files of one registered pair (MFNet: both name the same 4-channel PNG)."""

    rgb: Path  # visible image
    ir: Path  # thermal image
    name: str  # identifier (file stem, prefixed where needed to be unique in its source)


def _images_by_stem(folder: Path) -> dict[str, Path]:
    """Image files of ``folder`` keyed by stem; two files with one stem is an error."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith('.'):
            if path.stem in found:
                raise ValueError(f'{folder}: {found[path.stem].name} and {path.name} share a stem')
            found[path.stem] = path
    return found


def _match_stems(rgb_dir: Path, ir_dir: Path, prefix: str = '') -> list[PairPaths]:
    """Pairs of same-stem images in two folders; an image without a partner is an error."""
    rgb, ir = _images_by_stem(rgb_dir), _images_by_stem(ir_dir)
    lonely = sorted(set(rgb) ^ set(ir))
    if lonely:
        raise ValueError(f'{len(lonely)} image(s) of {rgb_dir} and {ir_dir} have no partner of '
                         f'the same stem, e.g. {lonely[:3]}')
    return [PairPaths(rgb[stem], ir[stem], prefix + stem) for stem in sorted(rgb)]


def _find_dir_pairs(root: Path, layout: str, split: str | None) -> list[PairPaths]:
    """Layouts of two parallel folders, optionally one pair of folders per split."""
    if layout in _SPLITS:
        split = _SPLIT_ALIASES.get(split, split) if layout == 'mvip' else split
        splits = _SPLITS[layout] if split is None else (split,)
    elif split is not None:
        raise ValueError(f'layout {layout!r} has no splits, got split={split!r}')
    else:
        splits = (None,)
    pairs = []
    for name in splits:
        for rgb_tpl, ir_tpl in _DIR_PAIRS[layout]:
            rgb_dir, ir_dir = root / rgb_tpl.format(split=name), root / ir_tpl.format(split=name)
            if rgb_dir.is_dir() and ir_dir.is_dir():
                prefix = f'{name}/' if split is None and name is not None else ''
                pairs += _match_stems(rgb_dir, ir_dir, prefix)
                break
    return pairs


def _find_kaist(root: Path, split: str | None) -> list[PairPaths]:
    """KAIST: setXX/VYYY/{visible,lwir}/I*.jpg; names setXX_VYYY_IZZZZZ."""
    if split is not None and split not in _KAIST_SETS:
        raise ValueError(f'kaist split: expected one of {sorted(_KAIST_SETS)}, got {split!r}')
    base = root / 'images' if not any(root.glob('set[0-9][0-9]')) else root
    pairs = []
    for set_dir in sorted(base.glob('set[0-9][0-9]')):
        if split is not None and int(set_dir.name[3:]) not in _KAIST_SETS[split]:
            continue
        for video in sorted(set_dir.glob('V[0-9][0-9][0-9]')):
            if (video / 'visible').is_dir() and (video / 'lwir').is_dir():
                prefix = f'{set_dir.name}_{video.name}_'
                pairs += _match_stems(video / 'visible', video / 'lwir', prefix)
    return pairs


def _flir_file(images: Path, stem: str) -> Path:
    """``images/stem.<jpg|jpeg|png>``; FileNotFoundError names the folder and stem."""
    for suffix in ('.jpg', '.jpeg', '.png'):
        if (images / (stem + suffix)).is_file():
            return images / (stem + suffix)
    raise FileNotFoundError(f'{images}: no image {stem}.jpg/.jpeg/.png')


def _find_flir_aligned(root: Path, split: str | None) -> list[PairPaths]:
    """FLIR-aligned: JPEGImages/FLIR_x_RGB.jpg + FLIR_x_PreviewData.jpeg (thermal)."""
    base = root / 'align' if (root / 'align').is_dir() else root
    images = next((base / d for d in ('JPEGImages', 'AnnotatedImages') if (base / d).is_dir()),
                  None)
    if images is None:
        return []
    if split is None:
        ids = sorted(p.stem.removesuffix('_PreviewData') for p in images.glob('*_PreviewData.*')
                     if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        if split not in _FLIR_LISTS:
            raise ValueError(f'flir_aligned split: expected one of {sorted(_FLIR_LISTS)}, '
                             f'got {split!r}')
        name = f'align_{_FLIR_LISTS[split]}.txt'
        lists = [base / name, base / 'ImageSets' / 'Main' / name]
        listed = next((p for p in lists if p.is_file()), None)
        if listed is None:
            raise FileNotFoundError(f'flir_aligned split list not found: {lists[0]} or {lists[1]}')
        lines = (line.strip() for line in listed.read_text().splitlines())
        ids = [Path(line).stem.removesuffix('_PreviewData') for line in lines if line]
    return [PairPaths(_flir_file(images, f'{i}_RGB'), _flir_file(images, f'{i}_PreviewData'), i)
            for i in ids]


def _find_mfnet(root: Path, split: str | None) -> list[PairPaths]:
    """MFNet: images/<name>.png with R, G, B, thermal channels; split lists hold names."""
    images = root / 'images'
    if split is None:
        paths = sorted(images.glob('*.png')) if images.is_dir() else []
    else:
        listed = root / f'{split}.txt'
        if not listed.is_file():
            raise FileNotFoundError(f'mfnet split list {listed} not found')
        names = [line.strip() for line in listed.read_text().splitlines() if line.strip()]
        paths = [images / f'{Path(name).stem}.png' for name in names]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f'{listed} names {len(missing)} missing image(s), '
                                    f'e.g. {missing[:3]}')
    return [PairPaths(path, path, path.stem) for path in paths]


_DETECT = [  # (layout, test on root), most specific first
    ('mfnet', lambda r: (r / 'images').is_dir()
     and any((r / f'{s}.txt').is_file() for s in ('train', 'val', 'test'))),
    ('flir_aligned', lambda r: any((b / d).is_dir() for b in (r, r / 'align')
                                   for d in ('JPEGImages', 'AnnotatedImages'))),
    ('kaist', lambda r: any(r.glob('set[0-9][0-9]')) or any(r.glob('images/set[0-9][0-9]'))),
    ('llvip', lambda r: (r / 'visible').is_dir() and (r / 'infrared').is_dir()),
    ('msrs', lambda r: any((r / s / 'vi').is_dir() for s in _SPLITS['msrs'])),
    ('mvip', lambda r: (r / 'vi_images').is_dir() and (r / 'images').is_dir()),
    ('m3fd', lambda r: (r / 'Vis').is_dir() and (r / 'Ir').is_dir()),
    ('roadscene', lambda r: (r / 'crop_LR_visible').is_dir() and (r / 'cropinfrared').is_dir()),
    ('folder', lambda r: (r / 'vi').is_dir() and (r / 'ir').is_dir()),
]


def detect_layout(root: str | Path) -> str:
    """The layout of ``root`` judged by its folders; ValueError lists what each layout needs."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f'data folder {root} not found')
    for layout, matches in _DETECT:
        if matches(root):
            return layout
    known = '; '.join(f'{name}: {need}' for name, need in LAYOUTS.items())
    raise ValueError(f'cannot tell the layout of {root}; expected one of: {known}')


def find_pairs(root: str | Path, layout: str = 'auto', split: str | None = None
               ) -> list[PairPaths]:
    """All registered pairs under ``root`` in a native ``layout`` (module docstring).

    Raises:
        FileNotFoundError: ``root`` or a listed file is missing.
        ValueError: unknown layout/split, unpaired images, or no pair found.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f'data folder {root} not found')
    if layout == 'auto':
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected 'auto' or one of {sorted(LAYOUTS)}, got {layout!r}")
    finders = {'kaist': _find_kaist, 'flir_aligned': _find_flir_aligned, 'mfnet': _find_mfnet}
    if layout in finders:
        pairs = finders[layout](root, split)
    else:
        pairs = _find_dir_pairs(root, layout, split)
    if not pairs:
        where = '' if split is None else f' (split {split!r})'
        raise ValueError(f'no image pairs in {root}{where} for layout {layout!r}: '
                         f'expected {LAYOUTS[layout]}')
    return pairs


def load_pair(pair: PairPaths) -> tuple[np.ndarray, np.ndarray]:
    """Decode one pair: (H, W, 3) uint8 RGB and (H, W) uint8|uint16 thermal of equal size."""
    return read_pair(pair.rgb, pair.ir, pair.name)


class PairedRgbtDataset(Dataset):
    """Pairs as tensors: {'rgb': (3, S, S) float32, 'ir': (3, S, S) float32, 'name': str}.

    Training draws one shared crop + flip per item from a generator seeded by (seed, epoch,
    index), so an item is the same in any worker, process or rerun; evaluation
    (``train=False``) uses the crop's deterministic centre window.
    """

    def __init__(self, pairs: Sequence[PairPaths], size: int = 224, train: bool = True,
                 seed: int = 0, crop: PairedRandomResizedCrop | None = None,
                 thermal_norm: ThermalNorm | None = None) -> None:
        """Build the dataset.

        Args:
            pairs: the pairs.
            size: output side (ignored when ``crop`` is given).
            train: random (True) or deterministic centre (False) geometry.
            seed: >= 0, base of the per-item seeds.
            crop: geometry (default: the official UNIV crop at ``size``).
            thermal_norm: how 16-bit / float thermal maps to [0, 1] (default: the
                Predictor's default, per-frame percentiles); applied to the whole frame before
                the crop, as the Predictor sees whole frames.
        """
        if not pairs:
            raise ValueError('PairedRgbtDataset: no pairs given')
        if seed < 0:
            raise ValueError(f'seed: expected >= 0, got {seed}')
        self.pairs = list(pairs)
        self.train, self.seed, self.epoch = train, seed, 0
        self.crop = crop if crop is not None else PairedRandomResizedCrop(size=size)
        self.thermal_norm = thermal_norm

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used by ``__getitem__`` (a new epoch draws new crops)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        return self.sample(index, self.epoch)

    def sample(self, index: int, epoch: int = 0) -> dict[str, torch.Tensor | str]:
        """Item ``index`` as drawn in ``epoch`` (the epoch only matters when training)."""
        index = range(len(self.pairs))[index]  # IndexError outside, negatives allowed
        pair = self.pairs[index]
        rgb, thermal = load_pair(pair)
        unit = thermal_to_unit(thermal, self.thermal_norm)  # (H, W) float32 in [0, 1]
        generator = np.random.default_rng([self.seed, epoch, index]) if self.train else None
        crop = self.crop(rgb, unit, generator)
        return {'rgb': rgb_to_tensor(crop.rgb), 'ir': thermal_to_tensor(crop.ir),
                'name': pair.name}


def _name_hash(name: str, seed: int) -> float:
    """Stable uniform number in [0, 1) for a pair name (no dependence on Python's hash seed)."""
    digest = hashlib.sha256(f'{seed}\0{name}'.encode()).digest()
    return int.from_bytes(digest[:8], 'big') / 2.0**64


def split_holdout(pairs: Sequence[PairPaths], amount: int | float, seed: int = 0
                  ) -> tuple[list[PairPaths], list[PairPaths]]:
    """Split pairs into (train, held out) by hashing their names; both keep input order.

    Args:
        pairs: the pairs.
        amount: a float fraction in [0, 1): a pair is held out when its name hash is below it,
            so its fate never depends on the other pairs (adding data moves nothing); or an int
            count in [0, len(pairs)): the pairs with the lowest name hashes.
        seed: selects another deterministic split.
    """
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise ValueError(f'holdout amount: expected an int count or a float fraction, '
                         f'got {amount!r}')
    scores = [_name_hash(p.name, seed) for p in pairs]
    if isinstance(amount, float):
        if not 0.0 <= amount < 1.0:
            raise ValueError(f'holdout fraction: expected in [0, 1), got {amount}')
        held = [score < amount for score in scores]
    else:
        if not 0 <= amount < len(pairs):
            raise ValueError(f'holdout count: expected in [0, {len(pairs)}) for {len(pairs)} '
                             f'pairs, got {amount}')
        order = sorted(range(len(pairs)), key=lambda i: (scores[i], pairs[i].name))
        chosen = set(order[:amount])
        held = [i in chosen for i in range(len(pairs))]
    train = [p for p, h in zip(pairs, held, strict=True) if not h]
    return train, [p for p, h in zip(pairs, held, strict=True) if h]


def build_pretrain_dataset(sources: Sequence[tuple], size: int = 224, train: bool = True,
                           seed: int = 0, crop: PairedRandomResizedCrop | None = None
                           ) -> PairedRgbtDataset:
    """One dataset over several sources (MVIP-style concatenation).

    Args:
        sources: (root, layout) or (root, layout, split) tuples, read with :func:`find_pairs`.
        size: output side, as for :class:`PairedRgbtDataset`.
        train: random or centre geometry.
        seed: base of the per-item seeds.
        crop: geometry (default: the official UNIV crop at ``size``).
    """
    pairs: list[PairPaths] = []
    for source in sources:
        if not 2 <= len(source) <= 3:
            raise ValueError(f'source {source!r}: expected (root, layout[, split])')
        pairs += find_pairs(*source)
    if not pairs:
        raise ValueError('build_pretrain_dataset: no sources given')
    return PairedRgbtDataset(pairs, size=size, train=train, seed=seed, crop=crop)
