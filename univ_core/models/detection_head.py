"""The detection head on a feature pyramid: torchvision's FCOS with float-stride points.

torchvision's :class:`~torchvision.models.detection.FCOS` (head, label assignment, focal / GIoU /
centre-ness losses, box coder, top-k + class-wise NMS post-processing) run on the given pyramid:
no backbone and no resizing transform inside.
"""

from types import SimpleNamespace

import torch
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection._utils import BoxLinearCoder
from torchvision.models.detection.fcos import FCOSHead


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
