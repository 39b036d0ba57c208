"""`PerceptionModel`: backbone + feature pyramid + optional segmentation and detection heads.

Every layer after the backbone normalises per sample (LayerNorm / GroupNorm), so one batch may
mix RGB and thermal images freely: each image's outputs equal those of a batch of one.
"""

import torch
from torch import nn

from univ_core.models.backbone import create_backbone
from univ_core.models.detection_head import FCOSDetector
from univ_core.models.heads import FCNHead, UPerNetHead, segmentation_loss
from univ_core.models.pyramid import SimpleFeaturePyramid, StagePyramid

CONVMAE_INPUT_MULTIPLE = 16  # ConvMAE-B's total patch stride
# FCOS runs on p3..p5 (as FCOS on P3+): p2 (stride p/4) would hold 3/4 of all points, and cost.
DET_LEVELS = slice(1, None)


class PerceptionModel(nn.Module):
    """Backbone, pyramid and heads, with inference (``forward``) and training (``losses``) calls.

    Args:
        backbone: a timm ViT (``forward_features``, ``num_prefix_tokens``) or a backbone with
            ``forward_stages`` (ConvMAE), matching ``pyramid``.
        pyramid: :class:`SimpleFeaturePyramid` (ViT) or :class:`StagePyramid` (ConvMAE).
        input_multiple: image height and width must be multiples of this (the patch stride).
        seg_head: UPerNet head, or None for no segmentation.
        aux_head: FCN head on ``p4`` used only by ``losses``, or None.
        det_head: FCOS detector, or None for no detection.
        ignore_index: segmentation target value that is ignored.
        aux_weight: weight of the auxiliary segmentation loss.
    """

    def __init__(
        self,
        backbone: nn.Module,
        pyramid: SimpleFeaturePyramid | StagePyramid,
        input_multiple: int,
        seg_head: UPerNetHead | None = None,
        aux_head: FCNHead | None = None,
        det_head: FCOSDetector | None = None,
        ignore_index: int = 255,
        aux_weight: float = 0.4,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pyramid = pyramid
        self.input_multiple = input_multiple
        self.seg_head = seg_head
        self.aux_head = aux_head
        self.det_head = det_head
        self.ignore_index = ignore_index
        self.aux_weight = aux_weight
        self.backbone_frozen = False

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Pyramid levels p2..p5.

        Args:
            images: (B, 3, H, W) float32 normalised; H and W multiples of ``input_multiple``.

        Returns:
            Four (B, C, h_i, w_i) float32 maps, finest first (strides ``pyramid.strides``).
        """
        multiple = self.input_multiple
        if images.dim() != 4 or images.shape[-2] % multiple or images.shape[-1] % multiple:
            raise ValueError(f'images: expected (B, 3, H, W) with H, W multiples of '
                             f'{self.input_multiple}, got {tuple(images.shape)}')
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.backbone_frozen):
            backbone_out = self.backbone_maps(images)
        return list(self.pyramid(backbone_out).values())

    def backbone_maps(self, images: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """ConvMAE: its three stage maps; ViT: the last patch tokens as a (B, D, h, w) map.

        Head-only training caches these once (the frozen backbone never changes them) and passes
        them to :meth:`losses` as ``maps``.
        """
        if hasattr(self.backbone, 'forward_stages'):
            return self.backbone.forward_stages(images)
        prefix = int(getattr(self.backbone, 'num_prefix_tokens', 0))
        tokens = self.backbone.forward_features(images)[:, prefix:]  # (B, h*w, D)
        grid = (images.shape[-2] // self.input_multiple, images.shape[-1] // self.input_multiple)
        return tokens.unflatten(1, grid).permute(0, 3, 1, 2)  # (B, D, h, w)

    def forward(
        self,
        images: torch.Tensor,
        score_thresh: float = 0.2,
        nms_iou: float = 0.6,
        max_detections: int = 100,
    ) -> dict[str, torch.Tensor | list[dict[str, torch.Tensor]]]:
        """Inference outputs (call ``eval()`` first: dropout).

        Args:
            images: (B, 3, H, W) float32 normalised; H and W multiples of ``input_multiple``.
            score_thresh: detection score threshold (sqrt(class prob * centre-ness)).
            nms_iou: class-wise NMS IoU threshold.
            max_detections: most boxes per image.

        Returns:
            ``seg_logits`` (B, K_seg, H, W) float32 when there is a segmentation head; ``det``
            when there is a detection head: B dicts of ``boxes`` (K, 4) float32 xyxy input px,
            ``scores`` (K,) float32, ``labels`` (K,) int64 (0-based).
        """
        features = self.features(images)
        outputs: dict[str, torch.Tensor | list[dict[str, torch.Tensor]]] = {}
        if self.seg_head is not None:
            logits = self.seg_head(features)  # (B, K, h_0, w_0)
            outputs['seg_logits'] = nn.functional.interpolate(
                logits, size=images.shape[-2:], mode='bilinear', align_corners=False)
        if self.det_head is not None:
            outputs['det'] = self.det_head.predict(
                features[DET_LEVELS], tuple(images.shape[-2:]), score_thresh, nms_iou,
                max_detections)
        return outputs

    def losses(
        self,
        images: torch.Tensor | None,
        seg_targets: torch.Tensor | None = None,
        det_targets: list[dict[str, torch.Tensor]] | None = None,
        maps: torch.Tensor | list[torch.Tensor] | None = None,
        seg_class_weights: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Weighted training losses; their sum is the objective.

        Args:
            images: (B, 3, H, W) float32 normalised.
            seg_targets: (B, H, W) int64 class ids, ``ignore_index`` where unlabelled; or None.
            det_targets: B dicts of ``boxes`` (K, 4) float32 xyxy input px and ``labels`` (K,)
                int64 0-based; or None.
            maps: cached :meth:`backbone_maps` output used instead of ``images`` (frozen
                backbone only).
            seg_class_weights: (K,) per-class pixel weights of the segmentation losses
                (:func:`~univ_core.models.heads.balanced_class_weights`), or None.

        Returns:
            ``seg``, ``seg_aux`` (x ``aux_weight``), ``det_classification``,
            ``det_bbox_regression``, ``det_bbox_ctrness``: those whose head and targets exist.
        """
        if seg_targets is not None and self.seg_head is None:
            raise ValueError('seg_targets given but the model has no segmentation head')
        if det_targets is not None and self.det_head is None:
            raise ValueError('det_targets given but the model has no detection head')
        if maps is not None and not self.backbone_frozen:
            raise ValueError('cached backbone maps need a frozen backbone (freeze_backbone())')
        features = list(self.pyramid(maps).values()) if maps is not None else self.features(images)
        losses: dict[str, torch.Tensor] = {}
        if seg_targets is not None:
            losses['seg'] = segmentation_loss(
                self.seg_head(features), seg_targets, self.ignore_index, seg_class_weights)
            if self.aux_head is not None:
                aux = segmentation_loss(self.aux_head(features[2]), seg_targets,
                                        self.ignore_index, seg_class_weights)
                losses['seg_aux'] = self.aux_weight * aux
        if det_targets is not None:
            for name, value in self.det_head.loss(features[DET_LEVELS], det_targets).items():
                losses[f'det_{name}'] = value
        return losses

    def freeze_backbone(self) -> None:
        """Train only the pyramid and heads: backbone frozen, in eval mode, run without grad."""
        self.backbone.requires_grad_(False)
        self.backbone_frozen = True
        self.backbone.eval()

    def train(self, mode: bool = True) -> 'PerceptionModel':
        """Set train/eval mode; a frozen backbone stays in eval mode."""
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """Pyramid and head weights only (no ``backbone.*``), contiguous: safetensors-ready."""
        return {
            name: tensor.detach().contiguous()
            for name, tensor in self.state_dict().items()
            if not name.startswith('backbone.')
        }

    def load_head_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`head_state_dict` returned; keys must match exactly."""
        expected = set(self.head_state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(f'head state dict does not fit this model: missing {missing[:5]}, '
                             f'unexpected {unexpected[:5]}')
        self.load_state_dict(state, strict=False)


def create_perception_model(
    arch: str = 'vit_small_patch14_dinov2',
    weights: str = 'default',
    num_seg_classes: int | None = 9,
    num_det_classes: int | None = 3,
    head_channels: int = 256,
    aux_seg_head: bool = True,
    **backbone_overrides: object,
) -> PerceptionModel:
    """Build backbone (see ``create_backbone``), pyramid and the requested heads.

    Args:
        arch: timm backbone name (ViT family, or ``convmae_*``).
        weights: backbone weights, as ``create_backbone``.
        num_seg_classes: segmentation classes; None for no segmentation head.
        num_det_classes: detection classes; None for no detection head.
        head_channels: pyramid and head width (a multiple of 32).
        aux_seg_head: add the FCN auxiliary segmentation head (training only).
        **backbone_overrides: extra ``timm.create_model`` arguments.
    """
    if head_channels < 32 or head_channels % 32:
        raise ValueError(f'head_channels: expected a positive multiple of 32, got {head_channels}')
    if num_seg_classes is None and num_det_classes is None:
        raise ValueError('num_seg_classes and num_det_classes are both None: no head to build')
    backbone = create_backbone(arch, weights, **backbone_overrides)
    if hasattr(backbone, 'forward_stages'):
        pyramid = StagePyramid(tuple(f['num_chs'] for f in backbone.feature_info), head_channels)
        multiple = CONVMAE_INPUT_MULTIPLE
    else:
        size = backbone.patch_embed.patch_size
        multiple = size if isinstance(size, int) else size[0]
        if not isinstance(size, int) and size[0] != size[1]:
            raise ValueError(f'arch {arch!r}: non-square patches {size} are not supported')
        pyramid = SimpleFeaturePyramid(backbone.num_features, head_channels, multiple)
    levels = (head_channels,) * 4
    seg_head = aux_head = det_head = None
    if num_seg_classes is not None:
        seg_head = UPerNetHead(levels, num_seg_classes, head_channels)
        if aux_seg_head:
            aux_head = FCNHead(head_channels, num_seg_classes, head_channels)
    if num_det_classes is not None:
        det_head = FCOSDetector(head_channels, num_det_classes, pyramid.strides[DET_LEVELS])
    return PerceptionModel(backbone, pyramid, multiple, seg_head, aux_head, det_head)
