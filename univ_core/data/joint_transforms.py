"""Joint geometry for labelled samples: one window moves both images, the mask and the boxes.

Training: :class:`JointAugment` draws one :class:`~univ_core.data.transforms.CropWindow` (random
resized crop / scale jitter + horizontal flip, from the paired crop of the pre-training code) and
applies it to the RGB image, the thermal image, the mask (nearest neighbour) and both box sets;
boxes are clipped and those left smaller than `min_box_size` are dropped with their labels.
Evaluation: :class:`EvalResize` resizes deterministically to a square (letterbox: aspect kept,
padding bottom/right; or a plain stretch) and records a :class:`ResizeInfo`, with which
:func:`boxes_to_source` / :func:`map_to_source` bring predictions back to the original pixels.
Samples are the numpy dicts of :mod:`univ_core.data.labelled`; :func:`sample_to_tensors` and
:func:`collate_samples` make model inputs.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from univ_core.data.transforms import (
    CropWindow,
    Generator,
    PairedRandomResizedCrop,
    rgb_to_tensor,
    thermal_to_tensor,
    thermal_to_unit,
)

IGNORE_INDEX = 255  # mask value of padding and unlabelled pixels


def apply_window(sample: dict, window: CropWindow, min_box_size: float = 0.0) -> dict:
    """Move one sample through `window`.

    Args:
        sample: numpy sample ('rgb' (H, W, 3) uint8, 'thermal' (H, W), 'mask' (H, W) or None,
            'boxes_rgb' / 'boxes_ir' (K, 4) float32 xyxy with 'labels_rgb' / 'labels_ir').
        window: the geometry.
        min_box_size: boxes narrower or shorter than this (output pixels) are dropped; boxes
            with no area are always dropped.

    Returns:
        A new sample of side window.out_size; other keys are copied unchanged.
    """
    out = dict(sample)
    out['rgb'] = window.image(sample['rgb'])
    out['thermal'] = window.image(sample['thermal'])
    if sample.get('mask') is not None:
        out['mask'] = window.mask(sample['mask'])
    for key in ('rgb', 'ir'):
        boxes = window.boxes(sample[f'boxes_{key}'])  # (K, 4) clipped output pixels
        sizes = boxes[:, 2:] - boxes[:, :2]  # (K, 2): width, height
        keep = (sizes > 0).all(axis=1) & (sizes >= min_box_size).all(axis=1)
        out[f'boxes_{key}'] = boxes[keep]
        out[f'labels_{key}'] = np.asarray(sample[f'labels_{key}'], np.int64)[keep]
    return out


def _default_crop() -> PairedRandomResizedCrop:
    return PairedRandomResizedCrop(size=512, scale=(0.25, 1.0), mode='area')


@dataclass
class JointAugment:
    """Training geometry: one random resized crop + flip shared by images, mask and boxes."""

    crop: PairedRandomResizedCrop = field(default_factory=_default_crop)  # window sampler
    min_box_size: float = 2.0  # boxes narrower or shorter than this after the crop are dropped

    def __post_init__(self) -> None:
        if self.min_box_size < 0:
            raise ValueError(f'min_box_size: expected >= 0, got {self.min_box_size}')

    def __call__(self, sample: dict, generator: Generator | None) -> dict:
        """Augment one numpy sample; generator None gives the crop's deterministic centre."""
        rgb, thermal = sample['rgb'], sample['thermal']
        if rgb.shape[:2] != thermal.shape[:2]:
            raise ValueError(f'sample {sample.get("name")}: rgb {rgb.shape[:2]} and thermal '
                             f'{thermal.shape[:2]} (H, W) differ')
        height, width = thermal.shape[:2]
        window = (self.crop.center(height, width) if generator is None
                  else self.crop.sample(height, width, generator))
        return apply_window(sample, window, self.min_box_size)


@dataclass(frozen=True)
class ResizeInfo:
    """How EvalResize mapped source pixels to output pixels: out = source * scale."""

    scale_x: float  # output pixels per source pixel along x
    scale_y: float  # output pixels per source pixel along y
    height: int  # source rows
    width: int  # source columns


def _pad_to_square(image: np.ndarray, value: int) -> np.ndarray:
    """(H, W[, C]) -> (M, M[, C]), M = max(H, W), padding bottom/right with `value`."""
    side = max(image.shape[:2])
    pad = [(0, side - image.shape[0]), (0, side - image.shape[1])] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, pad, constant_values=value)


@dataclass
class EvalResize:
    """Deterministic resize to size x size, recording the scale to map predictions back."""

    size: int = 512  # output side in pixels
    letterbox: bool = True  # keep the aspect ratio and pad bottom/right; False: stretch
    pad_value: int = 0  # image padding value (masks are padded with IGNORE_INDEX)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f'size: expected >= 1, got {self.size}')

    def __call__(self, sample: dict) -> dict:
        """Resize one numpy sample; the result holds 'resize': ResizeInfo."""
        height, width = sample['thermal'].shape[:2]
        if self.letterbox:
            sample = dict(sample)
            sample['rgb'] = _pad_to_square(sample['rgb'], self.pad_value)
            sample['thermal'] = _pad_to_square(sample['thermal'], self.pad_value)
            if sample.get('mask') is not None:
                sample['mask'] = _pad_to_square(sample['mask'], IGNORE_INDEX)
        rows, cols = sample['thermal'].shape[:2]
        out = apply_window(sample, CropWindow(0, 0, rows, cols, self.size, False))
        out['resize'] = ResizeInfo(self.size / cols, self.size / rows, height, width)
        return out


def boxes_to_source(boxes: np.ndarray, info: ResizeInfo) -> np.ndarray:
    """(N, 4) xyxy output pixels -> (N, 4) float32 xyxy source pixels, clipped to the source."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)  # (N, 4)
    scale = np.array([info.scale_x, info.scale_y] * 2, np.float32)
    limit = np.array([info.width, info.height] * 2, np.float32)
    return (boxes / scale).clip(0, limit)


def map_to_source(values: np.ndarray, info: ResizeInfo, nearest: bool = True) -> np.ndarray:
    """A per-pixel map of the output (class ids, scores) -> the source pixel grid.

    Args:
        values: (S, S) or (S, S, C) map over EvalResize's output: integer class ids or float
            scores (bool and 8-byte integers are not supported).
        info: the sample's ResizeInfo.
        nearest: nearest neighbour (class ids) or bilinear (scores).

    Returns:
        (height, width[, C]) map of the source image, same dtype (padding discarded).
    """
    if values.dtype == np.bool_ or (values.dtype.itemsize == 8 and values.dtype.kind in 'iu'):
        raise ValueError(f'values: dtype {values.dtype} unsupported; cast class ids to int32')
    # Pixel centres: out + 0.5 = (source + 0.5) * scale, as in cv2.resize.
    to_output = np.array([[info.scale_x, 0, 0.5 * info.scale_x - 0.5],
                          [0, info.scale_y, 0.5 * info.scale_y - 0.5]], np.float64)
    flags = (cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR) | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(values, to_output, (info.width, info.height), flags=flags,
                          borderMode=cv2.BORDER_REPLICATE)


def sample_to_tensors(sample: dict) -> dict:
    """Numpy sample -> model inputs.

    Returns:
        'rgb': (3, H, W) float32 ImageNet-normalised; 'thermal': (3, H, W) float32
        UNIV-normalised (as the Predictor); 'mask': (H, W) int64 or None;
        'boxes_*': (K, 4) float32; 'labels_*': (K,) int64; other keys copied.
    """
    out = dict(sample)
    out['rgb'] = rgb_to_tensor(sample['rgb'])
    out['thermal'] = thermal_to_tensor(thermal_to_unit(sample['thermal']))
    if sample.get('mask') is not None:
        out['mask'] = torch.from_numpy(sample['mask'].astype(np.int64))
    for key in ('rgb', 'ir'):
        out[f'boxes_{key}'] = torch.from_numpy(np.asarray(sample[f'boxes_{key}'], np.float32))
        out[f'labels_{key}'] = torch.from_numpy(np.asarray(sample[f'labels_{key}'], np.int64))
    return out


def collate_samples(batch: Sequence[dict]) -> dict:
    """Tensor samples of one size -> a batch.

    Returns:
        'rgb', 'thermal': (B, 3, H, W); 'mask': (B, H, W) int64 (None unless every sample has
        one); every other key a list of the per-sample values (boxes differ in count).
    """
    out = {key: [sample[key] for sample in batch] for key in batch[0]}
    out['rgb'] = torch.stack(out['rgb'])
    out['thermal'] = torch.stack(out['thermal'])
    masks = out.get('mask', [None])
    out['mask'] = None if any(m is None for m in masks) else torch.stack(masks)
    return out


class TransformedPairs(Dataset):
    """A labelled dataset through JointAugment (train) or EvalResize, then to tensors.

    Training draws each item's geometry from a generator seeded by (seed, epoch, index), so an
    item is the same in any worker or rerun; call set_epoch for new draws.
    """

    def __init__(self, dataset: Dataset, geometry: JointAugment | EvalResize,
                 seed: int = 0) -> None:
        """Wrap `dataset` (numpy samples) with `geometry` and tensor conversion."""
        self.dataset, self.geometry = dataset, geometry
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        """Epoch mixed into the training seeds."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict:
        sample = self.dataset[index]
        if isinstance(self.geometry, JointAugment):
            sample = self.geometry(sample, np.random.default_rng([self.seed, self.epoch, index]))
        else:
            sample = self.geometry(sample)
        return sample_to_tensors(sample)
