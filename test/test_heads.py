"""Feature pyramids, UPerNet / FCOS heads and PerceptionModel on toy backbones (CPU)."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from toy import TOY, TOY_ARCH

from univ_core.models.detection_head import FCOSDetector, point_anchors
from univ_core.models.heads import FCNHead, UPerNetHead, balanced_class_weights, segmentation_loss
from univ_core.models.perception import DET_LEVELS, PerceptionModel, create_perception_model
from univ_core.models.pyramid import LEVELS, SimpleFeaturePyramid, StagePyramid

CHANNELS = 32  # smallest width torchvision's FCOS head (GroupNorm(32)) accepts


def toy_model(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_perception_model(TOY_ARCH, 'none', head_channels=CHANNELS, **{**TOY, **kwargs})


@pytest.mark.parametrize('patch', [14, 16])
def test_vit_pyramid_levels_follow_patch_grid_on_non_square_input(patch):
    pyramid = SimpleFeaturePyramid(embed_dim=32, out_channels=CHANNELS, patch_size=patch)
    grid = (3, 5)  # an odd grid: p5 keeps the last row/column (ceil)
    levels = pyramid(torch.randn(2, 32, *grid))
    assert tuple(levels) == LEVELS
    shapes = [tuple(x.shape) for x in levels.values()]
    assert shapes == [(2, CHANNELS, 12, 20), (2, CHANNELS, 6, 10), (2, CHANNELS, 3, 5),
                      (2, CHANNELS, 2, 3)]
    assert pyramid.strides == (patch / 4, patch / 2, patch, 2 * patch)
    for (h, w), stride in zip([s[-2:] for s in shapes[:3]], pyramid.strides[:3], strict=True):
        assert (h * stride, w * stride) == (grid[0] * patch, grid[1] * patch)  # tiles the input


def test_stage_pyramid_maps_convmae_stages_to_the_same_levels():
    pyramid = StagePyramid((8, 12, 16), out_channels=CHANNELS)
    stages = [torch.randn(1, 8, 16, 24), torch.randn(1, 12, 8, 12), torch.randn(1, 16, 4, 6)]
    levels = pyramid(stages)
    assert [tuple(x.shape[-2:]) for x in levels.values()] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert all(x.shape[1] == CHANNELS for x in levels.values())
    assert pyramid.strides == (4.0, 8.0, 16.0, 32.0)


def test_seg_logits_match_input_size_and_aux_loss_present():
    model = toy_model(num_det_classes=None).eval()
    images = torch.randn(2, 3, 42, 70)  # 3 x 5 patches
    with torch.no_grad():
        out = model(images)
    assert set(out) == {'seg_logits'}
    assert out['seg_logits'].shape == (2, 9, 42, 70)
    targets = torch.randint(0, 9, (2, 42, 70))
    losses = model.train().losses(images, seg_targets=targets)
    assert set(losses) == {'seg', 'seg_aux'} and all(v.isfinite() for v in losses.values())


class ToyStageBackbone(torch.nn.Module):
    """Stands in for ConvMAE: ``forward_stages`` gives stride-4/8/16 maps (8, 12, 16 channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, kernel_size=4, stride=4)
        self.down1 = torch.nn.Conv2d(8, 12, kernel_size=2, stride=2)
        self.down2 = torch.nn.Conv2d(12, 16, kernel_size=2, stride=2)

    def forward_stages(self, images: torch.Tensor) -> list[torch.Tensor]:
        s1 = self.stem(images)
        s2 = self.down1(s1)
        return [s1, s2, self.down2(s2)]


def test_stage_backbone_path_gives_seg_and_det_at_input_pixels():
    torch.manual_seed(0)
    pyramid = StagePyramid((8, 12, 16), CHANNELS)
    model = PerceptionModel(
        ToyStageBackbone(), pyramid, 16, UPerNetHead((CHANNELS,) * 4, 4, 16),
        FCNHead(CHANNELS, 4, 16), FCOSDetector(CHANNELS, 2, pyramid.strides[DET_LEVELS])).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96), score_thresh=0.0)
    assert out['seg_logits'].shape == (1, 4, 64, 96)
    boxes = out['det'][0]['boxes']
    assert len(boxes) and (boxes[:, 2] <= 96).all() and (boxes[:, 3] <= 64).all()


def test_upernet_head_output_at_finest_level():
    head = UPerNetHead((CHANNELS,) * 4, num_classes=5, channels=16).eval()
    features = [torch.randn(1, CHANNELS, 16 // 2**i, 20 // 2**i) for i in range(4)]
    assert head(features).shape == (1, 5, 16, 20)


def test_seg_loss_ignores_255():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 4, 4)
    targets = torch.randint(0, 3, (1, 4, 4))
    targets[0, :2] = 255
    changed = logits.clone()
    changed[0, :, :2] = 100.0 * torch.randn(3, 2, 4)  # only where targets are ignored
    assert torch.allclose(segmentation_loss(logits, targets), segmentation_loss(changed, targets))
    kept = torch.nn.functional.cross_entropy(logits[0, :, 2:].unsqueeze(0), targets[:, 2:])
    assert torch.allclose(segmentation_loss(logits, targets), kept)
    all_ignored = torch.full_like(targets, 255)
    assert segmentation_loss(logits, all_ignored).item() == 0.0
    with pytest.raises(ValueError, match='class ids'):
        segmentation_loss(logits, torch.full_like(targets, 3))


def test_balanced_class_weights_lift_rare_classes_and_keep_the_pixel_average():
    counts = torch.tensor([900.0, 100.0, 0.0])  # class 2 never labelled
    assert torch.allclose(balanced_class_weights(counts, 0.0), torch.ones(3))
    weights = balanced_class_weights(counts, 0.5)
    assert torch.isclose(weights[1] / weights[0], torch.tensor(3.0))  # sqrt(900 / 100)
    assert torch.isclose((weights[:2] * counts[:2]).sum() / counts.sum(), torch.tensor(1.0))
    assert weights[2] == weights[:2].max()
    with pytest.raises(ValueError, match='power'):
        balanced_class_weights(counts, -1.0)


def test_weighted_seg_loss_is_the_weighted_pixel_average():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 4, 4)
    targets = torch.randint(0, 3, (1, 4, 4))
    targets[0, 0] = 255
    weights = torch.tensor([0.5, 1.0, 4.0])
    per_pixel = torch.nn.functional.cross_entropy(logits, targets.clamp_max(2),
                                                  reduction='none')
    valid = targets != 255
    w = weights[targets.clamp_max(2)] * valid
    want = (per_pixel * w).sum() / w.sum()
    assert torch.allclose(segmentation_loss(logits, targets, class_weights=weights), want)
    assert not torch.allclose(segmentation_loss(logits, targets), want)


def test_point_anchors_centred_on_cells_with_float_strides():
    anchors = point_anchors([(2, 3), (1, 2)], (3.5, 7.0), torch.device('cpu'))
    assert anchors.shape == (8, 4)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    assert torch.allclose(centres[:3], torch.tensor([[1.75, 1.75], [5.25, 1.75], [8.75, 1.75]]))
    assert torch.allclose(centres[6:], torch.tensor([[3.5, 3.5], [10.5, 3.5]]))
    assert torch.allclose(anchors[:, 2] - anchors[:, 0], torch.tensor([3.5] * 6 + [7.0] * 2))


def test_det_eval_returns_typed_boxes_inside_image():
    model = toy_model(num_seg_classes=None).eval()
    images = torch.randn(2, 3, 42, 56)
    with torch.no_grad():
        out = model(images, score_thresh=0.0, nms_iou=0.5, max_detections=7)
    assert set(out) == {'det'} and len(out['det']) == 2
    for det in out['det']:
        assert 0 < len(det['boxes']) <= 7
        assert det['boxes'].dtype == torch.float32 and det['boxes'].shape[1] == 4
        assert det['scores'].dtype == torch.float32 and det['labels'].dtype == torch.int64
        boxes = det['boxes']
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= 56).all() and (boxes[:, 3] <= 42).all()
        assert ((det['labels'] >= 0) & (det['labels'] < 3)).all()
        assert (det['scores'][:-1] >= det['scores'][1:]).all()  # best first
    with torch.no_grad():
        assert all(len(d['boxes']) == 0 for d in model(images, score_thresh=1.0)['det'])


def test_outputs_do_not_depend_on_batch_composition():
    model = toy_model().eval()
    images = torch.randn(2, 3, 28, 42)
    with torch.no_grad():
        both = model(images, score_thresh=0.0)
        alone = model(images[1:], score_thresh=0.0)
    assert torch.allclose(both['seg_logits'][1:], alone['seg_logits'], atol=1e-5)
    assert torch.allclose(both['det'][1]['scores'], alone['det'][0]['scores'], atol=1e-5)


def test_det_losses_finite_and_decrease_when_overfitting_one_box():
    model = toy_model(num_seg_classes=None).train()
    torch.manual_seed(0)
    image = torch.randn(1, 3, 56, 56)
    targets = [{'boxes': torch.tensor([[10.0, 12.0, 40.0, 44.0]]), 'labels': torch.tensor([2])}]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    totals = []
    for _ in range(20):
        losses = model.losses(image, det_targets=targets)
        assert set(losses) == {'det_classification', 'det_bbox_regression', 'det_bbox_ctrness'}
        assert all(v.isfinite() for v in losses.values())
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    assert totals[-1] < 0.7 * totals[0], totals


def test_det_targets_are_checked():
    model = toy_model(num_seg_classes=None).train()
    image = torch.randn(1, 3, 56, 56)  # p5 2x2: GroupNorm(32) on 32 channels needs > 1 cell
    bad_box = [{'boxes': torch.tensor([[5.0, 5.0, 5.0, 9.0]]), 'labels': torch.tensor([0])}]
    with pytest.raises(ValueError, match='x2 > x1'):
        model.losses(image, det_targets=bad_box)
    bad_label = [{'boxes': torch.tensor([[1.0, 1.0, 9.0, 9.0]]), 'labels': torch.tensor([3])}]
    with pytest.raises(ValueError, match='labels'):
        model.losses(image, det_targets=bad_label)
    empty = [{'boxes': torch.zeros(0, 4), 'labels': torch.zeros(0, dtype=torch.int64)}]
    assert all(v.isfinite() for v in model.losses(image, det_targets=empty).values())
    with pytest.raises(ValueError, match='multiples of 14'):
        model(torch.randn(1, 3, 30, 28))


def test_fcos_detector_rejects_channels_groupnorm_cannot_split():
    with pytest.raises(ValueError, match='multiple of 32'):
        FCOSDetector(48, 3, (4.0, 8.0, 16.0, 32.0))


def test_freeze_backbone_leaves_only_head_params_trainable():
    model = toy_model()
    model.freeze_backbone()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith('backbone.') for n in trainable)
    heads = {n for n, _ in model.named_parameters() if not n.startswith('backbone.')}
    assert trainable == heads
    model.train()
    assert not model.backbone.training and model.seg_head.training
    losses = model.losses(torch.randn(1, 3, 28, 28), seg_targets=torch.zeros(1, 28, 28).long())
    sum(losses.values()).backward()
    assert all(p.grad is None for p in model.backbone.parameters())


def test_head_state_dict_round_trip_through_safetensors(tmp_path):
    source, target = toy_model(), toy_model()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p))
    state = source.head_state_dict()
    assert state and not any(k.startswith('backbone.') for k in state)
    save_file(state, str(tmp_path / 'heads.safetensors'))
    target.load_head_state_dict(load_file(str(tmp_path / 'heads.safetensors')))
    for name, tensor in target.head_state_dict().items():
        assert torch.equal(tensor, state[name]), name
    backbone_key = next(k for k in target.state_dict() if k.startswith('backbone.'))
    assert not torch.equal(target.state_dict()[backbone_key], source.state_dict()[backbone_key])
    with pytest.raises(ValueError, match='missing'):
        target.load_head_state_dict({k: v for k, v in state.items() if 'det_head' not in k})
