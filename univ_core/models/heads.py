"""Task heads on a feature pyramid: UPerNet segmentation (+ FCN auxiliary) and FCOS detection.

Segmentation follows mmsegmentation's ``UPerHead`` / ``FCNHead`` (UNIV's choice), with
LayerNorm2d instead of BatchNorm so that outputs never depend on the batch. Detection is
torchvision's :class:`~torchvision.models.detection.FCOS` (head, label assignment, focal / GIoU /
centre-ness losses, box coder, top-k + class-wise NMS post-processing) run on the given pyramid:
no backbone and no resizing transform inside.
"""

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection._utils import BoxLinearCoder
from torchvision.models.detection.fcos import FCOSHead


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


def point_anchors(
    sizes: list[tuple[int, int]], strides: tuple[float, ...], device: torch.device
) -> torch.Tensor:
    """FCOS points as square boxes of side ``stride`` centred on each cell, all levels.

    torchvision's ``AnchorGenerator`` uses integer strides (``image_size // grid_size``) and
    places points at cell corners, which is wrong for a patch-14 pyramid (stride 3.5 px);
    here points sit at ``(i + 0.5) * stride`` with float strides.

    Args:
        sizes: (h, w) of each level, finest first.
        strides: input pixels per cell of each level.
        device: where to build them.

    Returns:
        (sum h*w, 4) float32 xyxy boxes in input pixels, level by level, row-major within one
        (the order of ``FCOSHead``'s flattened outputs).
    """
    boxes = []
    for (h, w), stride in zip(sizes, strides, strict=True):
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * stride
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * stride
        cy, cx = torch.meshgrid(ys, xs, indexing='ij')  # (h, w) each
        centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 4)  # (h*w, 4)
        half = stride / 2
        boxes.append(centres + centres.new_tensor([-half, -half, half, half]))
    return torch.cat(boxes)


def decode_points(
    raw: dict[str, torch.Tensor],
    sizes: list[tuple[int, int]],
    strides: tuple[float, ...],
    image_size: tuple[int, int],
    score_thresh: float,
    nms_iou: float,
    max_detections: int,
    topk_candidates: int,
) -> list[dict[str, torch.Tensor]]:
    """Detections from FCOS head outputs (PyTorch and ONNX paths share this).

    Args:
        raw: ``cls_logits`` (B, P, K), ``bbox_regression`` (B, P, 4), ``bbox_ctrness``
            (B, P, 1), P = sum of the levels' h * w (finest level first).
        sizes: (h, w) of each level.
        strides: input pixels per cell of each level.
        image_size: (H, W) of the input tensor; boxes are clipped to it.
        score_thresh: minimum sqrt(class probability * centre-ness).
        nms_iou: class-wise NMS IoU threshold.
        max_detections: most boxes kept per image (best first).
        topk_candidates: boxes kept per level before NMS.

    Returns:
        B dicts: ``boxes`` (K, 4) float32 xyxy input px, ``scores`` (K,) float32,
        ``labels`` (K,) int64 in [0, num_classes).
    """
    per_level = [h * w for h, w in sizes]
    device = raw['cls_logits'].device
    anchors = point_anchors(sizes, tuple(strides), device).split(per_level)
    outputs = {k: list(v.float().split(per_level, dim=1)) for k, v in raw.items()}  # per level
    # FCOS.postprocess_detections reads exactly these attributes of ``self``; passing them per
    # call keeps thresholds call-time settings without mutating shared module state.
    settings = SimpleNamespace(
        score_thresh=score_thresh, nms_thresh=nms_iou, detections_per_img=max_detections,
        topk_candidates=topk_candidates, box_coder=BoxLinearCoder(normalize_by_size=True))
    batch = len(raw['cls_logits'])
    return FCOS.postprocess_detections(
        settings, outputs, [list(anchors)] * batch, [tuple(image_size)] * batch)


class FCOSDetector(FCOS):
    """torchvision's FCOS on an external pyramid with input-pixel boxes and 0-based labels.

    Inherits FCOS's label assignment (``compute_loss``: centre sampling, per-level size ranges
    4-8 strides) and ``postprocess_detections``. FCOS's ``backbone``, ``transform`` (resize +
    normalise) and integer ``anchor_generator`` are removed: features come from the pyramid,
    images arrive resized, points come from :func:`point_anchors`. FCOS classifies with one
    sigmoid per class and marks background as -1 internally, so label k is logit k: no shift.

    Args:
        in_channels: pyramid width (a multiple of 32: torchvision's head uses GroupNorm(32)).
        num_classes: detection classes K.
        strides: input pixels per cell of each pyramid level.
        num_convs: conv layers in each of FCOS's two towers.
        center_sampling_radius: positives lie within this many strides of a box centre.
        topk_candidates: best points kept per level before NMS.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        strides: tuple[float, ...],
        num_convs: int = 4,
        center_sampling_radius: float = 1.5,
        topk_candidates: int = 1000,
    ) -> None:
        if in_channels % 32 or num_classes < 1:
            raise ValueError(f'FCOSDetector: in_channels must be a multiple of 32 and num_classes '
                             f'>= 1; got {in_channels}, {num_classes}')
        placeholder = nn.Identity()
        placeholder.out_channels = in_channels  # FCOS checks its backbone for this attribute
        super().__init__(
            placeholder, num_classes, head=FCOSHead(in_channels, 1, num_classes, num_convs),
            center_sampling_radius=center_sampling_radius, topk_candidates=topk_candidates)
        del self.backbone, self.transform, self.anchor_generator  # see the class docstring
        self.strides = tuple(strides)

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """FCOS head outputs (raw, per point).

        Args:
            features: float32 pyramid maps (B, C, h_i, w_i), finest first; P = sum h_i * w_i.

        Returns:
            ``cls_logits`` (B, P, K), ``bbox_regression`` (B, P, 4), ``bbox_ctrness`` (B, P, 1).
        """
        return self.head(features)

    def loss(
        self, features: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """FCOS training losses (each normalised by the number of positive points).

        Args:
            features: float32 pyramid maps (B, C, h_i, w_i), finest first.
            targets: B dicts: ``boxes`` (K, 4) float32 xyxy input px, ``labels`` (K,) int64 in
                [0, num_classes).

        Returns:
            ``classification`` (sigmoid focal), ``bbox_regression`` (GIoU), ``bbox_ctrness`` (BCE).
        """
        targets = self._checked_targets(targets, len(features[0]), features[0].device)
        sizes = [tuple(x.shape[-2:]) for x in features]
        anchors = point_anchors(sizes, self.strides, features[0].device)
        outputs = {k: v.float() for k, v in self.head(features).items()}
        per_level = [h * w for h, w in sizes]
        return self.compute_loss(targets, outputs, [anchors] * len(targets), per_level)

    @torch.no_grad()
    def predict(
        self,
        features: list[torch.Tensor],
        image_size: tuple[int, int],
        score_thresh: float = 0.2,
        nms_iou: float = 0.6,
        max_detections: int = 100,
    ) -> list[dict[str, torch.Tensor]]:
        """Detections per image, after top-k, class-wise NMS and clipping to the image.

        Args:
            features: float32 pyramid maps (B, C, h_i, w_i), finest first.
            image_size: (H, W) of the input tensor; boxes are clipped to it.
            score_thresh: minimum sqrt(class probability * centre-ness).
            nms_iou: class-wise NMS IoU threshold.
            max_detections: most boxes kept per image (best first).

        Returns:
            B dicts: ``boxes`` (K, 4) float32 xyxy input px, ``scores`` (K,) float32,
            ``labels`` (K,) int64 in [0, num_classes).
        """
        sizes = [tuple(x.shape[-2:]) for x in features]
        return decode_points(self.head(features), sizes, self.strides, image_size,
                             score_thresh, nms_iou, max_detections, self.topk_candidates)

    def _checked_targets(
        self, targets: list[dict[str, torch.Tensor]], batch: int, device: torch.device
    ) -> list[dict[str, torch.Tensor]]:
        if len(targets) != batch:
            raise ValueError(f'det targets: expected {batch} dicts, got {len(targets)}')
        checked = []
        for i, target in enumerate(targets):
            boxes = torch.as_tensor(target['boxes'], dtype=torch.float32, device=device)
            labels = torch.as_tensor(target['labels'], dtype=torch.int64, device=device)
            if boxes.dim() != 2 or boxes.shape[-1] != 4 or labels.shape != boxes.shape[:1]:
                raise ValueError(f'det targets[{i}]: expected boxes (K, 4) and labels (K,), got '
                                 f'{tuple(boxes.shape)} and {tuple(labels.shape)}')
            if bool((boxes[:, 2:] <= boxes[:, :2]).any()):
                raise ValueError(f'det targets[{i}]: boxes must be xyxy with x2 > x1 and y2 > y1')
            if bool(((labels < 0) | (labels >= self.head.classification_head.num_classes)).any()):
                raise ValueError(f'det targets[{i}]: labels must be in [0, num_classes)')
            checked.append({'boxes': boxes, 'labels': labels})
        return checked
