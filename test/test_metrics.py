"""Segmentation mIoU and detection mAP against hand-computed cases."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics.detection import MeanAveragePrecision

from univ_core.eval.metrics import (
    DetectionMeter,
    SegmentationMeter,
    confusion_matrix,
    detection_map,
    iou_per_class,
)

# 3x3 toy: one ignored pixel (255) bottom right.
TARGET = np.array([[0, 0, 1], [1, 1, 2], [2, 2, 255]], dtype=np.uint8)
PREDICTION = np.array([[0, 1, 1], [1, 1, 2], [2, 0, 2]], dtype=np.int64)


def test_confusion_matrix_counts_the_toy_by_hand():
    expected = np.array([[1, 1, 0], [0, 3, 0], [1, 0, 2]])  # rows target, columns prediction
    np.testing.assert_array_equal(confusion_matrix(PREDICTION, TARGET, 3), expected)


def test_miou_on_the_toy_matches_hand_computation():
    meter = SegmentationMeter(['a', 'b', 'c', 'never_seen'])
    meter.update(PREDICTION, TARGET)
    scores = meter.compute()
    # IoU a: TP 1 / (TP 1 + FN 1 + FP 1); b: 3 / (3 + 0 + 1); c: 2 / (2 + 1 + 0)
    assert scores['iou']['a'] == pytest.approx(1 / 3)
    assert scores['iou']['b'] == pytest.approx(3 / 4)
    assert scores['iou']['c'] == pytest.approx(2 / 3)
    assert math.isnan(scores['iou']['never_seen'])  # absent from GT and prediction
    assert scores['miou'] == pytest.approx((1 / 3 + 3 / 4 + 2 / 3) / 3)  # NaN left out
    assert scores['pixel_accuracy'] == pytest.approx(6 / 8)
    assert scores['pixels'] == 8


def test_meter_accumulates_like_one_big_batch_and_resets():
    rng = np.random.default_rng(0)
    preds = rng.integers(0, 4, size=(3, 5, 6))
    targets = rng.integers(0, 4, size=(3, 5, 6))
    meter = SegmentationMeter(['a', 'b', 'c', 'd'])
    for pred, target in zip(preds, targets, strict=True):
        meter.update(pred, target)
    np.testing.assert_array_equal(meter.confusion, confusion_matrix(preds, targets, 4))
    meter.reset()
    assert meter.confusion.sum() == 0
    assert math.isnan(meter.compute()['miou'])


def test_class_predicted_but_never_in_gt_has_iou_zero_not_nan():
    confusion = np.array([[2, 1], [0, 0]])  # class 1 predicted once, never true
    np.testing.assert_allclose(iou_per_class(confusion), [2 / 3, 0.0])


@pytest.mark.parametrize(
    'bad_pred, bad_target, word',
    [
        (np.array([[3]]), np.array([[0]]), 'prediction'),
        (np.array([[0]]), np.array([[7]]), 'target'),
        (np.array([[0.5]]), np.array([[0]]), 'integer'),
    ],
)
def test_confusion_matrix_rejects_bad_ids(bad_pred, bad_target, word):
    with pytest.raises(ValueError, match=word):
        confusion_matrix(bad_pred, bad_target, 3)


def _target(boxes, labels):
    return {
        'boxes': np.array(boxes, dtype=np.float32).reshape(-1, 4),
        'labels': np.array(labels, dtype=np.int64),
    }


def _pred(boxes, scores, labels):
    return {**_target(boxes, labels), 'scores': np.array(scores, dtype=np.float32)}


GT_A = [10, 10, 50, 50]
GT_B = [60, 20, 90, 70]
ELSEWHERE = [200, 200, 240, 240]


def test_perfect_predictions_give_map_one():
    targets = [_target([GT_A, GT_B], [0, 1]), _target([GT_B], [0])]
    preds = [_pred([GT_A, GT_B], [0.9, 0.8], [0, 1]), _pred([GT_B], [0.7], [0])]
    scores = detection_map(preds, targets, ['person', 'car'])
    assert scores['map'] == pytest.approx(1.0)
    assert scores['map50'] == pytest.approx(1.0)
    assert scores['ap'] == pytest.approx({'person': 1.0, 'car': 1.0})


def test_no_predictions_give_map_zero():
    targets = [_target([GT_A], [0])]
    scores = detection_map([_pred([], [], [])], targets, ['person'])
    assert scores['map'] == 0.0
    assert scores['map50'] == 0.0


def test_false_positive_ranked_above_the_true_positive_halves_ap50():
    # One GT; ranked detections: FP (0.9), TP (0.8). Precision at recall 1 is 1/2, and the
    # interpolated envelope is 1/2 at every recall step, so AP50 = 0.5.
    targets = [_target([GT_A], [0])]
    preds = [_pred([ELSEWHERE, GT_A], [0.9, 0.8], [0, 0])]
    assert detection_map(preds, targets, ['person'])['map50'] == pytest.approx(0.5)


def test_fp_between_two_tps_matches_101_point_interpolation():
    # Two GTs; ranked: TP (P 1, R .5), FP (P .5, R .5), TP (P 2/3, R 1).
    # Envelope: 1 for the 51 recall steps 0..0.50, 2/3 for the 50 steps 0.51..1.
    targets = [_target([GT_A, GT_B], [0, 0])]
    preds = [_pred([GT_A, ELSEWHERE, GT_B], [0.9, 0.8, 0.7], [0, 0, 0])]
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    scores = detection_map(preds, targets, ['person'])
    assert scores['map50'] == pytest.approx(expected)
    assert scores['ap50']['person'] == pytest.approx(expected)


@pytest.mark.parametrize('cap', [10, 50, 300])
def test_map_does_not_depend_on_a_cap_above_the_boxes_per_image(cap):
    """pycocotools' own mAP@[.5:.95] reads the cap 100 only; the meter's reads any cap."""
    targets = [_target([GT_A, GT_B], [0, 0])]
    preds = [_pred([GT_A, ELSEWHERE, GT_B], [0.9, 0.8, 0.7], [0, 0, 0])]
    meter = DetectionMeter(['person'], max_detections=cap)
    meter.update(preds, targets)
    want = detection_map(preds, targets, ['person'])['map']  # the default cap, 100
    assert meter.compute()['map'] == pytest.approx(want)


def test_per_class_ap_keeps_class_ids_and_nan_for_classes_without_gt():
    names = ['person', 'bicycle', 'car']
    targets = [_target([GT_A, GT_B], [0, 2])]
    preds = [_pred([ELSEWHERE, GT_B], [0.9, 0.8], [0, 2])]  # person missed, car perfect
    scores = detection_map(preds, targets, names)
    assert scores['ap']['person'] == 0.0
    assert scores['ap']['car'] == pytest.approx(1.0)
    assert math.isnan(scores['ap']['bicycle'])
    assert scores['map'] == pytest.approx(0.5)


def test_per_class_ap_agrees_with_torchmetrics_class_metrics():
    rng = np.random.default_rng(1)
    targets, preds = [], []
    for _ in range(4):
        xy = rng.uniform(0, 100, size=(5, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 40, size=(5, 2))], axis=1)
        labels = rng.integers(0, 3, size=5)
        targets.append(_target(boxes, labels))
        jitter = boxes + rng.normal(0, 4, size=boxes.shape)
        preds.append(_pred(jitter, rng.uniform(size=5), rng.integers(0, 3, size=5)))
    meter = DetectionMeter(['a', 'b', 'c'])
    meter.update(preds[:2], targets[:2])
    meter.update(preds[2:], targets[2:])
    ours = meter.compute()
    reference = MeanAveragePrecision(box_format='xyxy', class_metrics=True)
    reference.update(
        [{k: torch.from_numpy(v) for k, v in p.items()} for p in preds],
        [{k: torch.from_numpy(v) for k, v in t.items()} for t in targets],
    )
    ref = reference.compute()
    for class_id, value in zip(
        ref['classes'].tolist(), ref['map_per_class'].tolist(), strict=True
    ):
        assert ours['ap'][['a', 'b', 'c'][class_id]] == pytest.approx(value, abs=1e-6)
    assert ours['map'] == pytest.approx(float(ref['map']), abs=1e-6)


def test_detection_input_errors_name_the_problem():
    meter = DetectionMeter(['person'])
    with pytest.raises(ValueError, match='labels outside'):
        meter.update([_pred([GT_A], [0.5], [3])], [_target([GT_A], [0])])
    with pytest.raises(ValueError, match='scores'):
        meter.update([_target([GT_A], [0])], [_target([GT_A], [0])])
    with pytest.raises(ValueError, match='1 predictions but 2 targets'):
        meter.update([_pred([], [], [])], [_target([], []), _target([], [])])


def _seg_headroom():
    """tools/seg_headroom.py as a module (tools/ is not a package)."""
    import importlib.util
    path = Path(__file__).resolve().parents[1] / 'tools' / 'seg_headroom.py'
    spec = importlib.util.spec_from_file_location('seg_headroom', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_patch_grid_oracle_keeps_patch_sized_regions_and_loses_a_lone_pixel():
    oracle = _seg_headroom().patch_grid_oracle
    mask = np.zeros((28, 56), np.uint8)  # a 2 x 4 grid of 14 px patches
    mask[:, 28:] = 1  # two whole patch columns of class 1
    mask[3, 3] = 2  # one pixel of class 2: no patch is mostly class 2
    mask[20:, :14] = 255  # ignored pixels vote for nothing
    out = oracle(mask, (2, 4), 3)
    assert out.shape == mask.shape and out.dtype == np.uint8
    assert (out[:, 30:] == 1).all() and (out[:, :26] == 0).all()
    assert not (out == 2).any()


def test_segmentation_is_only_scored_on_the_models_own_classes():
    """Mask ids are compared as integers: another class list would be scored id by id."""
    from types import SimpleNamespace

    from univ_core.eval.downstream import evaluate

    data = SimpleNamespace(class_names=['unlabeled', 'car', 'person'],
                           seg_class_names=None, __len__=lambda: 0)
    for seg_classes, message in ((['road', 'person', 'car'], "segments \\['road'"),
                                 (None, 'no segmentation head')):
        predictor = SimpleNamespace(seg_classes=seg_classes)
        with pytest.raises(ValueError, match=message):
            evaluate('seg', predictor, data, ['rgb'])
