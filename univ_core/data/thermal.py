"""Thermal intensity normalisation to [0, 1] on the target device.

8-bit thermal (already AGC'd by the camera) is divided by 255. 16-bit radiometric counts and
float images (e.g. Kelvin) need a range: ``fixed`` maps [low, high] linearly (stable across
frames: the right choice for a calibrated camera); ``percentile`` stretches each frame between
its p_low / p_high percentiles (robust to hot spots, adapts to the scene, like the camera's AGC).
"""

from dataclasses import dataclass

import torch


@dataclass
class ThermalNorm:
    """How 16-bit or float thermal images map to [0, 1] (8-bit is always /255)."""

    mode: str = 'percentile'  # 'percentile' (per frame) | 'fixed' (low/high below)
    low: float = 0.0  # fixed mode: input value mapped to 0
    high: float = 65535.0  # fixed mode: input value mapped to 1
    p_low: float = 1.0  # percentile mode: lower percentile (0-100)
    p_high: float = 99.0  # percentile mode: upper percentile (0-100)

    def __post_init__(self) -> None:
        if self.mode not in ('percentile', 'fixed'):
            raise ValueError(
                f"thermal_norm.mode: expected 'percentile' or 'fixed', got {self.mode!r}")
        if self.mode == 'fixed' and not self.high > self.low:
            raise ValueError(f'thermal_norm: high ({self.high}) must exceed low ({self.low})')
        if not 0 <= self.p_low < self.p_high <= 100:
            raise ValueError(f'thermal_norm: need 0 <= p_low < p_high <= 100, got '
                             f'{self.p_low}, {self.p_high}')

    def quantiles(self, device: torch.device) -> torch.Tensor:
        """(2,) float32 [p_low, p_high] / 100 on ``device`` (build once, pass to :meth:`apply`)."""
        return torch.tensor([self.p_low / 100.0, self.p_high / 100.0], device=device)

    def apply(self, thermal: torch.Tensor, is_uint8: bool,
              quantiles: torch.Tensor | None = None) -> torch.Tensor:
        """Map raw thermal values to [0, 1].

        Args:
            thermal: (B, H, W) float32 raw values.
            is_uint8: the values came from 8-bit images (divided by 255).
            quantiles: :meth:`quantiles` on the device, to avoid building it per frame.

        Returns:
            (B, H, W) float32 in [0, 1].
        """
        if is_uint8:
            return thermal / 255.0
        if self.mode == 'fixed':
            return ((thermal - self.low) / (self.high - self.low)).clamp(0.0, 1.0)
        sample = thermal[:, ::4, ::4].flatten(1)  # (B, h*w/16): percentiles of a subgrid
        q = self.quantiles(thermal.device) if quantiles is None else quantiles
        lo, hi = torch.quantile(sample, q, dim=1)[:, :, None, None]  # (2, B, 1, 1) -> 2 x (B,1,1)
        return ((thermal - lo) / (hi - lo).clamp_min(1e-6)).clamp(0.0, 1.0)
