"""Segmentation heads on a feature pyramid: UPerNet (+ FCN auxiliary) and their loss.

They follow mmsegmentation's ``UPerHead`` / ``FCNHead`` (UNIV's choice), with LayerNorm2d
instead of BatchNorm so that outputs never depend on the batch. The detection head is in
:mod:`univ_core.models.detection_head`.
"""

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn


def _conv_norm_act(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """Mmcv's ConvModule: bias-free conv (same padding), LayerNorm2d, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        LayerNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _resize(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, C, h, w) to (B, C, *size)."""
    return F.interpolate(x, size=size, mode='bilinear', align_corners=False)


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling on one map: pooled context at several scales, fused by a 3x3 conv.

    ONNX note: adaptive pooling exports when the map size is a multiple of every pool scale.
    """

    def __init__(self, in_channels: int, channels: int, pool_scales: tuple[int, ...]) -> None:
        super().__init__()
        self.branches = nn.ModuleList([
            nn.Sequential(nn.AdaptiveAvgPool2d(scale), _conv_norm_act(in_channels, channels, 1))
            for scale in pool_scales
        ])
        self.bottleneck = _conv_norm_act(in_channels + len(pool_scales) * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C_in, h, w) float32. Returns (B, channels, h, w)."""
        pooled = [_resize(branch(x), x.shape[-2:]) for branch in self.branches]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))


class UPerNetHead(nn.Module):
    """UPerNet (Xiao et al., 2018): PPM on the coarsest level, FPN top-down fusion of all levels.

    Args:
        in_channels: channels of each pyramid level, finest first.
        num_classes: segmentation classes K.
        channels: width of the head's convolutions.
        pool_scales: PPM output sizes.
        dropout: channel dropout before the classifier.
    """

    def __init__(
        self,
        in_channels: tuple[int, ...],
        num_classes: int,
        channels: int = 256,
        pool_scales: tuple[int, ...] = (1, 2, 3, 6),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if num_classes < 1 or channels < 1 or len(in_channels) < 2:
            raise ValueError(f'UPerNetHead: need num_classes >= 1, channels >= 1 and >= 2 levels; '
                             f'got {num_classes}, {channels}, {in_channels}')
        self.ppm = PyramidPooling(in_channels[-1], channels, pool_scales)
        self.laterals = nn.ModuleList([_conv_norm_act(c, channels, 1) for c in in_channels[:-1]])
        self.fpn_convs = nn.ModuleList([
            _conv_norm_act(channels, channels, 3) for _ in in_channels[:-1]
        ])
        self.fuse = _conv_norm_act(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Fuse the pyramid into class logits.

        Args:
            features: float32 maps (B, C_i, h_i, w_i), finest first.

        Returns:
            (B, K, h_0, w_0) float32 logits at the finest level's resolution.
        """
        laterals = [conv(x) for conv, x in zip(self.laterals, features[:-1], strict=True)]
        laterals.append(self.ppm(features[-1]))
        for i in range(len(laterals) - 1, 0, -1):  # top-down: add the coarser level, upsampled
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals[:-1], strict=True)]
        outs.append(laterals[-1])  # the PPM output joins unrefined, as in mmseg
        size = outs[0].shape[-2:]
        fused = self.fuse(torch.cat([outs[0], *(_resize(x, size) for x in outs[1:])], dim=1))
        return self.classifier(self.dropout(fused))


class FCNHead(nn.Module):
    """mmseg's auxiliary FCN head: one 3x3 conv, dropout, 1x1 classifier (training aid only)."""

    def __init__(
        self, in_channels: int, num_classes: int, channels: int = 256, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.conv = _conv_norm_act(in_channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, h, w) float32. Returns (B, K, h, w) float32 logits."""
        return self.classifier(self.dropout(self.conv(x)))


def segmentation_loss(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = 255,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pixel cross-entropy, averaged over non-ignored pixels (0 if every pixel is ignored).

    Args:
        logits: (B, K, h, w) float32; bilinearly upsampled to the targets' size first.
        targets: (B, H, W) int64 class ids in [0, K), or ``ignore_index``.
        ignore_index: target value that contributes nothing.
        class_weights: (K,) weight of a pixel of each true class, or None (all 1); the
            average is then weighted (sum of weighted losses / sum of the pixels' weights).

    Returns:
        Scalar float32 loss.
    """
    if targets.dim() != 3 or targets.shape[0] != logits.shape[0]:
        raise ValueError(f'seg targets: expected (B, H, W) with B = {logits.shape[0]}, '
                         f'got {tuple(targets.shape)}')
    valid = targets != ignore_index
    if bool(((targets < 0) | (targets >= logits.shape[1]))[valid].any()):
        raise ValueError(f'seg targets: class ids must be in [0, {logits.shape[1]}) or '
                         f'{ignore_index} (ignored)')
    logits = _resize(logits, targets.shape[-2:])  # (B, K, H, W)
    total = F.cross_entropy(logits.float(), targets, weight=class_weights,
                            ignore_index=ignore_index, reduction='sum')
    if class_weights is None:
        return total / valid.sum().clamp_min(1)
    return total / class_weights[targets[valid]].sum().clamp_min(1e-6)


def balanced_class_weights(pixel_counts: torch.Tensor, power: float) -> torch.Tensor:
    """Per-class pixel weights ``count ** -power``, scaled to a pixel-average of 1.

    ``power`` 0 weighs every pixel alike; 0.5 (inverse square-root frequency) lifts rare
    classes (vegetation at ~1 % of the labelled pixels) without letting a class of a few
    pixels dominate, as inverse frequency (1.0) would. Classes with no pixel get the largest
    weight of the others (they never occur in the targets those counts came from).

    Args:
        pixel_counts: (K,) labelled pixels per class in the training targets.
        power: exponent, >= 0.

    Returns:
        (K,) float32 weights.
    """
    counts = pixel_counts.double()
    if power < 0 or counts.sum() <= 0:
        raise ValueError(f'class weights: power must be >= 0 and some pixel labelled, got '
                         f'power {power}, {int(counts.sum())} pixels')
    present = counts > 0
    weights = torch.zeros_like(counts)
    weights[present] = counts[present] ** -power
    weights /= (weights * counts).sum() / counts.sum()  # labelled pixels average weight 1
    weights[~present] = weights[present].max()
    return weights.float()
