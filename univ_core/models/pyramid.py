"""Four-level feature pyramids for the downstream heads (ViTDet's simple feature pyramid).

Both pyramids return ``{'p2', 'p3', 'p4', 'p5'}`` (finest first), every level with the same
channel width, and expose ``strides``: the input pixels per output cell of each level.

ViT (:class:`SimpleFeaturePyramid`, Li et al., ViTDet, 2022) builds all levels from the LAST
feature map alone (patch stride ``p``): two stride-2 deconvolutions (x4), one deconvolution
(x2), identity (x1) and a 2x2 max-pool (x1/2), each followed by 1x1 conv + LayerNorm2d and
3x3 conv + LayerNorm2d. The level names follow ViTDet's patch-16 naming (stride 4, 8, 16, 32
px); with a patch-14 DINOv2 the same levels lie at 3.5, 7, 14 and 28 px (``strides`` gives the
true values). Downstream, segmentation logits are bilinearly upsampled from ``p2`` to the exact
input size, and detection places one FCOS point per cell at the cell centre
``(i + 0.5) * stride`` with these float strides, so non-integer strides cost nothing.

ConvMAE (:class:`StagePyramid`) already has strides 4, 8 and 16 in its three stages; ``p5`` is
a 2x2 max-pool of the last stage, and each level gets the same 1x1 + 3x3 output convolutions.

Only LayerNorm is used: outputs never depend on what else is in the batch.
"""

import torch
from timm.layers import LayerNorm2d
from torch import nn

LEVELS = ('p2', 'p3', 'p4', 'p5')


def _output_convs(in_channels: int, out_channels: int) -> nn.Sequential:
    """ViTDet's per-level output: bias-free 1x1 conv + LN, then 3x3 conv + LN."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
        LayerNorm2d(out_channels),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
        LayerNorm2d(out_channels),
    )


def _half_resolution() -> nn.MaxPool2d:
    """2x2 max-pool; ``ceil_mode`` keeps an odd grid's last row/column (cell i spans 2i, 2i+1)."""
    return nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid on a plain ViT's last feature map.

    Args:
        embed_dim: channels D of the ViT feature map.
        out_channels: channel width of every pyramid level.
        patch_size: the ViT's patch stride in input pixels (14 for DINOv2, 16 for DeiT/ViT).
    """

    def __init__(self, embed_dim: int, out_channels: int = 256, patch_size: int = 16) -> None:
        super().__init__()
        if embed_dim % 4 or embed_dim < 4:
            raise ValueError(f'embed_dim: expected a positive multiple of 4, got {embed_dim}')
        if out_channels < 1 or patch_size < 1:
            raise ValueError(f'out_channels and patch_size must be >= 1, got {out_channels}, '
                             f'{patch_size}')
        self.out_channels = out_channels
        self.strides = (patch_size / 4, patch_size / 2, float(patch_size), 2.0 * patch_size)
        half, quarter = embed_dim // 2, embed_dim // 4
        self.rescale = nn.ModuleList([
            nn.Sequential(  # x4: two stride-2 deconvolutions with LN + GELU between them
                nn.ConvTranspose2d(embed_dim, half, kernel_size=2, stride=2),
                LayerNorm2d(half),
                nn.GELU(),
                nn.ConvTranspose2d(half, quarter, kernel_size=2, stride=2),
            ),
            nn.ConvTranspose2d(embed_dim, half, kernel_size=2, stride=2),  # x2
            nn.Identity(),  # x1
            _half_resolution(),  # x1/2
        ])
        self.outputs = nn.ModuleList([
            _output_convs(dim, out_channels) for dim in (quarter, half, embed_dim, embed_dim)
        ])

    def forward(self, feature_map: torch.Tensor) -> dict[str, torch.Tensor]:
        """Build the pyramid.

        Args:
            feature_map: (B, D, h, w) float32 ViT patch features (h = H / patch, w = W / patch).

        Returns:
            ``p2`` (B, C, 4h, 4w), ``p3`` (B, C, 2h, 2w), ``p4`` (B, C, h, w),
            ``p5`` (B, C, ceil(h/2), ceil(w/2)).
        """
        return {
            name: output(rescale(feature_map))
            for name, rescale, output in zip(LEVELS, self.rescale, self.outputs, strict=True)
        }


class StagePyramid(nn.Module):
    """The same four levels from a hierarchical backbone's stride-4/8/16 stages (ConvMAE).

    Args:
        in_channels: channels of the three stages, finest first (ConvMAE-B: 256, 384, 768).
        out_channels: channel width of every pyramid level.
        base_stride: input pixels per cell of the finest stage (4 for ConvMAE).
    """

    def __init__(
        self,
        in_channels: tuple[int, int, int] = (256, 384, 768),
        out_channels: int = 256,
        base_stride: int = 4,
    ) -> None:
        super().__init__()
        if len(in_channels) != 3 or min(in_channels) < 1:
            raise ValueError(
                f'in_channels: expected three positive stage widths, got {in_channels}')
        self.out_channels = out_channels
        self.strides = tuple(float(base_stride * 2**level) for level in range(4))
        self.pool = _half_resolution()
        self.outputs = nn.ModuleList([
            _output_convs(dim, out_channels) for dim in (*in_channels, in_channels[-1])
        ])

    def forward(self, stages: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Build the pyramid.

        Args:
            stages: three float32 maps, finest first: (B, C1, H/4, W/4), (B, C2, H/8, W/8),
                (B, C3, H/16, W/16) (ConvMAE's ``forward_stages``).

        Returns:
            ``p2``..``p5`` with C channels at strides 4, 8, 16 and 32 px.
        """
        if len(stages) != 3:
            raise ValueError(f'stages: expected 3 feature maps, got {len(stages)}')
        maps = [*stages, self.pool(stages[-1])]
        return {
            name: output(x) for name, output, x in zip(LEVELS, self.outputs, maps, strict=True)
        }
