"""Paired RGB-T geometry (one crop and one flip for both images) and tensor conversion.

The official UNIV pre-training pipeline (``datasets/co_data_augmentation.py``) is: one shared
random crop whose side is a fraction r ~ U(0.4, 1) of the image side (image aspect kept), resized
to 224 x 224, then one shared horizontal flip (p = 0.5); no colour jitter. ``mode='side'`` does
exactly that; ``mode='area'`` is torchvision's RandomResizedCrop geometry (area fraction and
aspect-ratio jitter) applied to both images. The sampled :class:`CropWindow` moves images,
masks and boxes alike, so detection and segmentation reuse the same geometry.
"""

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from univ_core.data.thermal import ThermalNorm

RGB_MEAN = (0.485, 0.456, 0.406)  # ImageNet mean of [0, 1] RGB
RGB_STD = (0.229, 0.224, 0.225)  # ImageNet std of [0, 1] RGB
IR_MEAN = 0.5338  # UNIV thermal mean of [0, 1] intensities (configs/mcmae.yaml)
IR_STD = 0.2519  # UNIV thermal std of [0, 1] intensities

Generator = np.random.Generator | torch.Generator


def as_hw(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """An output size as (rows, cols): an int S means S x S."""
    hw = (size, size) if isinstance(size, int) else tuple(int(v) for v in size)
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f'size: expected an int >= 1 or (H, W) >= 1, got {size!r}')
    return hw


def rgb_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 normalised with ImageNet mean/std."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f'rgb: expected (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}')
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255.0  # (3, H, W)
    mean = torch.tensor(RGB_MEAN).view(3, 1, 1)
    std = torch.tensor(RGB_STD).view(3, 1, 1)
    return (x - mean) / std


def thermal_to_unit(thermal: np.ndarray, norm: ThermalNorm | None = None) -> np.ndarray:
    """Thermal intensities -> [0, 1], exactly as the Predictor maps them (one definition).

    Args:
        thermal: (H, W) uint8 | uint16 | float.
        norm: how 16-bit / float images map (default ``ThermalNorm()``: per-frame percentiles,
            the node's default); 8-bit images are divided by 255.

    Returns:
        (H, W) float32.
    """
    if thermal.ndim != 2:
        raise ValueError(f'thermal: expected (H, W), got shape {thermal.shape}')
    raw = torch.from_numpy(np.ascontiguousarray(thermal).astype(np.float32))[None]  # (1, H, W)
    return (norm or ThermalNorm()).apply(raw, thermal.dtype == np.uint8)[0].numpy()


def thermal_to_tensor(unit: np.ndarray) -> torch.Tensor:
    """(H, W) float thermal in [0, 1] (:func:`thermal_to_unit`) -> (3, H, W) float32.

    Normalised with IR_MEAN / IR_STD and replicated to 3 channels (the ViT's RGB patch
    embedding), as the Predictor's preprocessing does.
    """
    if unit.dtype not in (np.float32, np.float64):
        raise ValueError(f'thermal_to_tensor: expected [0, 1] floats from thermal_to_unit, got '
                         f'{unit.dtype}')
    x = torch.from_numpy(np.ascontiguousarray(unit, np.float32))  # (H, W)
    return ((x - IR_MEAN) / IR_STD).expand(3, -1, -1).contiguous()  # (3, H, W)


def _uniform(generator: Generator, low: float, high: float) -> float:
    """One float in [low, high) from a numpy or torch generator."""
    if isinstance(generator, torch.Generator):
        return low + (high - low) * torch.rand(1, generator=generator).item()
    return float(generator.uniform(low, high))


def _randint(generator: Generator, low: int, high: int) -> int:
    """One int in [low, high] (inclusive) from a numpy or torch generator."""
    if isinstance(generator, torch.Generator):
        return int(torch.randint(low, high + 1, (1,), generator=generator).item())
    return int(generator.integers(low, high + 1))


@dataclass(frozen=True)
class CropWindow:
    """One sampled geometry: crop rows/cols of the source, resize to out_size, maybe flip."""

    top: int  # first source row of the crop
    left: int  # first source column of the crop
    height: int  # crop rows in the source
    width: int  # crop columns in the source
    out_size: int | tuple[int, int]  # output (rows, cols); an int S means S x S
    flip: bool  # mirror left-right after resizing

    def __post_init__(self) -> None:
        object.__setattr__(self, 'out_size', as_hw(self.out_size))

    def image(self, image: np.ndarray) -> np.ndarray:
        """(H, W) or (H, W, C) any OpenCV dtype -> (h, w) or (h, w, C) out_size, same dtype."""
        crop = image[self.top:self.top + self.height, self.left:self.left + self.width]
        oh, ow = self.out_size
        shrink = self.height >= oh and self.width >= ow
        out = cv2.resize(crop, (ow, oh),
                         interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return np.ascontiguousarray(out[:, ::-1] if self.flip else out)  # mirror columns

    def mask(self, mask: np.ndarray) -> np.ndarray:
        """(H, W) class ids -> (h, w) out_size, nearest neighbour (no blended ids)."""
        crop = mask[self.top:self.top + self.height, self.left:self.left + self.width]
        out = cv2.resize(crop, self.out_size[::-1], interpolation=cv2.INTER_NEAREST)
        return np.ascontiguousarray(out[:, ::-1] if self.flip else out)  # mirror columns

    def boxes(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) float xyxy source pixels -> (N, 4) float32 xyxy output pixels.

        Boxes are clipped to the output; ones falling outside keep their row with zero width or
        height (so labels stay aligned): callers drop them where they need to.
        """
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)  # (N, 4)
        oh, ow = self.out_size
        sx, sy = ow / self.width, oh / self.height
        x = ((boxes[:, 0::2] - self.left) * sx).clip(0, ow)  # (N, 2): x1, x2
        y = ((boxes[:, 1::2] - self.top) * sy).clip(0, oh)  # (N, 2): y1, y2
        if self.flip:
            x = ow - x[:, ::-1]  # mirrored x2, x1 become x1, x2
        return np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)  # (N, 4) xyxy


@dataclass
class PairedCrop:
    """Both images (and optional labels) after one shared :class:`CropWindow`."""

    rgb: np.ndarray  # (S, S, 3) uint8 RGB
    ir: np.ndarray  # (S, S) thermal, source dtype
    window: CropWindow  # the geometry applied
    boxes: np.ndarray | None = None  # (N, 4) float32 xyxy output pixels
    mask: np.ndarray | None = None  # (S, S) class ids


@dataclass
class PairedRandomResizedCrop:
    """One random crop + resize + horizontal flip shared by the RGB and the thermal image."""

    size: int | tuple[int, int] = 224  # output side, or (H, W), in pixels
    scale: tuple[float, float] = (0.4, 1.0)  # side fraction ('side') or area fraction ('area')
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # width/height range, 'area' mode only
    hflip: float = 0.5  # probability of the shared horizontal flip
    mode: str = 'side'  # 'side': official UNIV crop; 'area': torchvision RandomResizedCrop

    def __post_init__(self) -> None:
        self.size = as_hw(self.size)
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f'scale: expected 0 < low <= high <= 1, got {self.scale}')
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f'ratio: expected 0 < low <= high, got {self.ratio}')
        if not 0 <= self.hflip <= 1:
            raise ValueError(f'hflip: expected a probability in [0, 1], got {self.hflip}')
        if self.mode not in ('side', 'area'):
            raise ValueError(f"mode: expected 'side' or 'area', got {self.mode!r}")

    def sample(self, height: int, width: int, generator: Generator) -> CropWindow:
        """Draw one window for a height x width image (same draws -> same window)."""
        if self.mode == 'side':
            fraction = _uniform(generator, *self.scale)
            h, w = max(1, int(height * fraction)), max(1, int(width * fraction))
        else:
            h, w = self._area_crop_size(height, width, generator)
        top, left = _randint(generator, 0, height - h), _randint(generator, 0, width - w)
        flip = _uniform(generator, 0.0, 1.0) < self.hflip
        return CropWindow(top, left, h, w, self.size, flip)

    def _area_crop_size(self, height: int, width: int, generator: Generator) -> tuple[int, int]:
        """(h, w) drawn as torchvision RandomResizedCrop does; fallback: largest in-ratio crop."""
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            area = height * width * _uniform(generator, *self.scale)
            aspect = math.exp(_uniform(generator, *log_ratio))
            w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < w <= width and 0 < h <= height:
                return h, w
        aspect = width / height
        if aspect < self.ratio[0]:
            return round(width / self.ratio[0]), width
        if aspect > self.ratio[1]:
            return height, round(height * self.ratio[1])
        return height, width

    def center(self, height: int, width: int) -> CropWindow:
        """The deterministic evaluation window, never flipped.

        'side' keeps the whole image (squashed to a square, as the r = 1 training crop is);
        'area' takes the centred square.
        """
        h = w = min(height, width)
        if self.mode == 'side':
            h, w = height, width
        return CropWindow((height - h) // 2, (width - w) // 2, h, w, self.size, False)

    def __call__(self, rgb: np.ndarray, ir: np.ndarray, generator: Generator | None = None,
                 boxes: np.ndarray | None = None, mask: np.ndarray | None = None) -> PairedCrop:
        """Crop both images (and boxes/mask) with one window.

        Args:
            rgb: (H, W, 3) uint8 RGB.
            ir: (H, W) thermal, any dtype OpenCV resizes (uint8, uint16, float32).
            generator: numpy or torch generator; None -> the deterministic :meth:`center`.
            boxes: (N, 4) float xyxy pixels on the pair, moved with it.
            mask: (H, W) class ids, moved with it (nearest neighbour).
        """
        if rgb.shape[:2] != ir.shape[:2]:
            raise ValueError(f'rgb {rgb.shape[:2]} and ir {ir.shape[:2]} (H, W) differ: a paired '
                             'crop needs pixel-aligned images')
        if mask is not None and mask.shape[:2] != rgb.shape[:2]:
            raise ValueError(f'mask {mask.shape[:2]} and images {rgb.shape[:2]} (H, W) differ')
        height, width = rgb.shape[:2]
        window = (self.center(height, width) if generator is None
                  else self.sample(height, width, generator))
        return PairedCrop(window.image(rgb), window.image(ir), window,
                          None if boxes is None else window.boxes(boxes),
                          None if mask is None else window.mask(mask))
