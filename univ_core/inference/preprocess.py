"""Image -> model-input tensors on the target device: ONE definition for inference and training.

uint8 / uint16 arrays are uploaded as they are and resized + normalised on the device.
"""

import numpy as np
import torch
import torch.nn.functional as F

from univ_core.data.thermal import ThermalNorm
from univ_core.data.transforms import IR_MEAN, IR_STD, RGB_MEAN, RGB_STD


class Preprocessor:
    """Resize to ``input_size`` (bilinear, antialiased) and normalise, per modality.

    Args:
        input_size: (H, W) model input, multiples of the patch size.
        thermal_norm: how 16-bit / float thermal maps to [0, 1].
        device: where the tensors are made (constants are built there once).
    """

    def __init__(self, input_size: tuple[int, int], thermal_norm: ThermalNorm,
                 device: torch.device) -> None:
        self.input_size = tuple(input_size)
        self.thermal_norm = thermal_norm
        self.device = device
        as_dev = {'device': device, 'dtype': torch.float32}
        self._rgb_mean = torch.tensor(RGB_MEAN, **as_dev).view(1, 3, 1, 1) * 255.0
        self._rgb_std = torch.tensor(RGB_STD, **as_dev).view(1, 3, 1, 1) * 255.0
        self._quantiles = thermal_norm.quantiles(device)

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float32 -> (B, C, h, w) at the model input size."""
        if tuple(images.shape[-2:]) == self.input_size:
            return images
        return F.interpolate(images, size=self.input_size, mode='bilinear', antialias=True,
                             align_corners=False)

    def rgb(self, rgbs: list[np.ndarray]) -> torch.Tensor:
        """N (H, W, 3) uint8 RGB of one size -> (N, 3, h, w) float32 ImageNet-normalised."""
        x = torch.from_numpy(np.stack(rgbs)).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float()  # (N, 3, H, W) in 0..255
        return (self.resize(x) - self._rgb_mean) / self._rgb_std

    def thermal(self, thermals: list[np.ndarray]) -> torch.Tensor:
        """N (H, W) uint8/uint16/float of one size -> (N, 3, h, w) float32, IR-normalised."""
        raw = np.stack(thermals)
        x = torch.from_numpy(raw).to(self.device, non_blocking=True).float()  # (N, H, W)
        x = self.thermal_norm.apply(x, raw.dtype == np.uint8, self._quantiles)
        x = self.resize(x[:, None])  # (N, 1, h, w)
        return ((x - IR_MEAN) / IR_STD).expand(-1, 3, -1, -1)  # one channel replicated to 3

    def box_scale(self, image_hw: tuple[int, int]) -> np.ndarray:
        """(4,) float32 factors taking xyxy boxes from image pixels to model-input pixels."""
        (h, w), (ih, iw) = image_hw, self.input_size
        return np.array([iw / w, ih / h, iw / w, ih / h], np.float32)
