"""Training views of labelled pairs at the model input: the full frame, its mirror, random crops.

Head-only training runs the frozen backbone once per view and caches its maps (fp16), so a few
views per image give augmentation at the price of a few backbone passes, not one per step.
View 0 is the Predictor's own input (the whole frame resized by the shared preprocessing);
view 1 its mirror; views 2+ random crops of the UNIV crop geometry (a fraction of each side,
aspect kept), with boxes and masks moved alike and boxes left tiny by the crop dropped
(:func:`apply_window`).
"""

import functools
from collections.abc import Iterator

import numpy as np
import torch

from univ_core.data.thermal import ThermalNorm
from univ_core.data.transforms import CropWindow, PairedRandomResizedCrop, thermal_to_unit
from univ_core.inference.preprocess import Preprocessor
from univ_core.train.downstream_data import model_inputs

IGNORE = 255  # mask value of unlabelled pixels
UNIT_THERMAL = ThermalNorm(mode='fixed', low=0.0, high=1.0)  # already in [0, 1]


@functools.lru_cache(maxsize=4)
def _unit_preprocessor(input_size: tuple[int, int], device: torch.device) -> Preprocessor:
    """The Predictor's preprocessing for thermal already mapped to [0, 1] (made once)."""
    return Preprocessor(input_size, UNIT_THERMAL, device)


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


def view_windows(height: int, width: int, views: int, input_size: tuple[int, int],
                 scale: tuple[float, float], seed: int) -> Iterator[CropWindow | None]:
    """``views`` geometries of a height x width pair: None (the frame as is), its mirror, crops.

    Args:
        height: source rows.
        width: source columns.
        views: how many (>= 1).
        input_size: (H, W) every view is resized to.
        scale: side fraction range of the random crops.
        seed: their generator's seed (per pair).
    """
    yield None
    if views > 1:
        yield CropWindow(0, 0, height, width, input_size, True)
    crops = PairedRandomResizedCrop(size=input_size, scale=scale, hflip=0.5)
    generator = np.random.default_rng(seed)
    for _ in range(views - 2):
        yield crops.sample(height, width, generator)


def training_views(sample: dict, modality: str, windows: list[CropWindow | None],
                   prep: Preprocessor, min_box_size: float = 2.0
                   ) -> Iterator[tuple[torch.Tensor, dict]]:
    """(image (1, 3, h, w), targets) per window; targets as ``model_inputs`` gives them.

    A sample without a mask gets an all-ignored one, so detection-only and segmented pairs can
    share one batch of a joint det + seg head.
    """
    h, w = sample['thermal'].shape[:2]
    if sample.get('mask') is None:
        sample = {**sample, 'mask': np.full((h, w), IGNORE, np.uint8)}
    if modality == 'thermal' and sample['thermal'].dtype != np.uint8:
        # 16-bit / float: mapped to [0, 1] on the whole frame as at inference, then cropped;
        # a crop stretched between its own percentiles would look unlike any deployed frame
        sample = {**sample, 'thermal': thermal_to_unit(sample['thermal'], prep.thermal_norm)}
        prep = _unit_preprocessor(prep.input_size, prep.device)
    for window in windows:
        view = sample if window is None else apply_window(sample, window, min_box_size)
        yield model_inputs(view, modality, prep)
