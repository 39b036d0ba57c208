"""Predictor: numpy in, numpy out, on a tiny random model (CPU)."""

import numpy as np
import pytest
from toy import MFNET_CLASSES, MSRS_DET_CLASSES, write_toy_model

from univ_core.inference import Predictor, PredictorConfig, ThermalNorm, load_predictor


@pytest.fixture(scope='module')
def predictor(tmp_path_factory):
    path = write_toy_model(tmp_path_factory.mktemp('model') / 'toy.safetensors')
    return load_predictor(PredictorConfig(model=str(path), device='cpu', score_threshold=0.0))


def pair(h: int = 512, w: int = 640) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
            rng.integers(20000, 30000, (h, w), dtype=np.uint16))


def test_640x512_rgb_and_mono16_pair_gives_input_sized_outputs(predictor) -> None:
    rgb, thermal = pair()
    out = predictor.predict(rgb, thermal, 'fused')
    assert out.mode == 'fused' and out.note == ''
    assert out.mask.shape == (512, 640) and out.mask.dtype == np.uint8
    assert out.mask.max() < len(MFNET_CLASSES)
    assert out.confidence.shape == (512, 640) and out.confidence.dtype == np.float32
    assert np.all((out.confidence > 0) & (out.confidence <= 1))
    det = out.detections
    assert det.boxes.dtype == np.float32 and det.boxes.shape == (len(det.scores), 4)
    assert det.class_ids.dtype == np.int64 and det.scores.dtype == np.float32
    assert len(det.boxes) > 0  # threshold 0 keeps the random head's boxes
    assert np.all(det.boxes[:, [0, 2]] <= 640) and np.all(det.boxes[:, [1, 3]] <= 512)
    assert np.all(det.boxes[:, :2] <= det.boxes[:, 2:])
    assert det.class_names == [MSRS_DET_CLASSES[k] for k in det.class_ids]


def test_fused_with_a_missing_modality_falls_back_and_says_so(predictor) -> None:
    rgb, thermal = pair(96, 120)
    only_rgb = predictor.predict(rgb, None, 'fused')
    assert only_rgb.mode == 'rgb' and 'thermal missing' in only_rgb.note
    only_thermal = predictor.predict(None, thermal, 'fused')
    assert only_thermal.mode == 'thermal' and 'rgb missing' in only_thermal.note
    assert only_thermal.mask.shape == (96, 120)
    # The same image alone gives the same outputs as in an explicit single-modality call.
    assert np.array_equal(only_rgb.mask, predictor.predict(rgb, None, 'rgb').mask)


def test_batch_of_pairs_equals_pairs_one_at_a_time(predictor) -> None:
    pairs = [pair(96, 120), pair(96, 120)]
    pairs[1] = (255 - pairs[1][0], pairs[1][1] // 2)
    batch = predictor.predict_batch([p[0] for p in pairs], [p[1] for p in pairs], 'fused')
    for (rgb, thermal), out in zip(pairs, batch, strict=True):
        one = predictor.predict(rgb, thermal, 'fused')
        assert np.mean(one.mask != out.mask) < 1e-3
        np.testing.assert_allclose(one.detections.boxes, out.detections.boxes, rtol=1e-3,
                                   atol=1e-2)


@pytest.mark.parametrize('rgb, thermal, message', [
    (np.zeros((8, 8), np.uint8), None, r'rgb.*\(H, W, 3\)'),
    (np.zeros((8, 8, 3), np.float32), None, 'rgb.*uint8'),
    (np.zeros((0, 8, 3), np.uint8), None, 'rgb.*empty'),
    ([[1, 2]], None, 'rgb.*numpy array'),
    (None, np.zeros((8, 8, 3), np.uint16), 'thermal.*one channel'),
    (None, np.zeros((8, 8), np.int32), 'thermal.*dtype'),
    (None, np.full((8, 8), np.nan, np.float32), 'thermal.*NaN'),
    (np.zeros((8, 8, 3), np.uint8), np.zeros((4, 8), np.uint8), 'differ'),
])
def test_bad_inputs_raise_value_errors_naming_the_argument(predictor, rgb, thermal,
                                                           message) -> None:
    with pytest.raises(ValueError, match=message):
        predictor.predict(rgb, thermal, 'fused')


def test_thermal_normalisation_fixed_and_percentile() -> None:
    import torch

    raw = torch.tensor([[[1000.0, 2000.0], [3000.0, 9000.0]]])
    fixed = ThermalNorm(mode='fixed', low=1000, high=3000).apply(raw, is_uint8=False)
    assert fixed.flatten().tolist() == [0.0, 0.5, 1.0, 1.0]
    stretched = ThermalNorm(p_low=0, p_high=100).apply(raw, is_uint8=False)
    assert stretched.min().item() == 0.0 and stretched.max().item() == 1.0
    with pytest.raises(ValueError, match='thermal_norm'):
        ThermalNorm(mode='fixed', low=5, high=5)


def test_homography_maps_thermal_boxes_and_allows_different_sizes(tmp_path) -> None:
    path = write_toy_model(tmp_path / 'toy.safetensors')
    scale = [2.0, 0, 0, 0, 2.0, 0, 0, 0, 1.0]  # thermal is half the RGB resolution
    config = PredictorConfig(model=str(path), device='cpu', score_threshold=0.0,
                             homography=scale)
    predictor = load_predictor(config)
    rgb, _ = pair(96, 120)
    _, thermal = pair(48, 60)
    out = predictor.predict(rgb, thermal, 'fused')
    assert out.mask.shape == (96, 120)
    assert np.all(out.detections.boxes[:, [0, 2]] <= 120 + 1e-3)
    with pytest.raises(ValueError, match='homography'):
        PredictorConfig(homography=[1.0, 0.0])


def test_thermal_boxes_outside_the_rgb_view_are_clipped_or_dropped(tmp_path) -> None:
    path = write_toy_model(tmp_path / 'toy.safetensors')
    wider = [2.0, 0, -60, 0, 2.0, -48, 0, 0, 1.0]  # only thermal's central half is in the RGB view
    predictor = load_predictor(PredictorConfig(model=str(path), device='cpu', score_threshold=0.0,
                                               homography=wider))
    rgb, thermal = pair(96, 120)
    thermal_alone = predictor.predict(None, thermal, 'thermal').detections.boxes
    assert np.any(thermal_alone[:, :2] < [30, 24]) or np.any(thermal_alone[:, 2:] > [90, 72])
    boxes = predictor.predict(rgb, thermal, 'fused').detections.boxes
    assert len(boxes) and np.all(boxes >= 0) and np.all(boxes[:, [0, 2]] <= 120)
    assert np.all(boxes[:, [1, 3]] <= 96) and np.all(boxes[:, 2:] >= boxes[:, :2])


def test_a_known_homography_maps_a_known_box() -> None:
    """transform_boxes (what the Predictor applies to thermal boxes) against hand values."""
    import torch

    from univ_core.inference.geometry import as_homography, transform_boxes

    box = torch.tensor([[10.0, 10.0, 20.0, 30.0]])
    scale_shift = torch.tensor(as_homography([2, 0, 5, 0, 2, -3, 0, 0, 1]), dtype=torch.float32)
    # x -> 2x + 5, y -> 2y - 3
    np.testing.assert_allclose(transform_boxes(box, scale_shift)[0], [25, 17, 45, 57], atol=1e-5)
    rotate = torch.tensor([[0.0, -1, 100], [1, 0, 0], [0, 0, 1]])  # (x, y) -> (100 - y, x)
    # corners (10,10) (20,10) (10,30) (20,30) -> (90,10) (90,20) (70,10) (70,20): hull below
    np.testing.assert_allclose(transform_boxes(box, rotate)[0], [70, 10, 90, 20], atol=1e-5)
    projective = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0.01, 0, 1]])  # x/(1+0.01x), y/(1+0.01x)
    np.testing.assert_allclose(transform_boxes(box, projective)[0],
                               [10 / 1.1, 10 / 1.2, 20 / 1.2, 30 / 1.1], atol=1e-4)


def test_fusion_weights_scale_each_cameras_scores_before_fusion(predictor) -> None:
    """(1, 0): thermal boxes count for nothing, so fused is the RGB list; (1, 1) adds them."""
    from dataclasses import replace

    rgb, thermal = pair(96, 120)

    def weighted(weights: tuple[float, float]) -> Predictor:
        config = replace(predictor.config, fusion_weights=weights, score_threshold=0.5)
        return Predictor(predictor.model, predictor.seg_classes, predictor.det_classes,
                         predictor.input_size, config)

    rgb_only = weighted((1, 0))
    fused = rgb_only.predict(rgb, thermal, 'fused', scoring=True).detections
    alone = rgb_only.predict(rgb, None, 'rgb', scoring=True).detections
    assert len(alone.boxes) > 0
    np.testing.assert_allclose(fused.boxes, alone.boxes, atol=1e-3)
    np.testing.assert_allclose(fused.scores, alone.scores, atol=1e-6)
    both = weighted((1, 1)).predict(rgb, thermal, 'fused', scoring=True).detections
    assert len(both.boxes) > len(fused.boxes)  # the thermal camera's boxes are back
    with pytest.raises(ValueError, match='fusion_weights'):
        PredictorConfig(fusion_weights=(1.0, 2.0))
