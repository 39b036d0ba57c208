"""Weighted box fusion and cross-class duplicate suppression, against hand-computed values."""

import numpy as np
import pytest

from univ_core.inference.box_fusion import fuse_boxes, suppress_duplicates

NOISY_OR = {'iou': 0.55, 'rule': 'noisy_or'}


def arrays(*rows):
    return [np.asarray(r, np.float32) for r in rows]


def test_max_keeps_the_better_cameras_score_and_never_lifts_two_weak_boxes():
    # the boxes of test_two_cameras_agreeing...: one object; and two 0.4 boxes of another
    boxes, scores, _ = fuse_boxes(arrays([[0, 0, 10, 10], [50, 50, 60, 60]],
                                         [[2, 0, 12, 10], [51, 50, 61, 60]]),
                                  arrays([0.8, 0.4], [0.4, 0.4]),
                                  [np.array([0, 0]), np.array([0, 0])], iou=0.55, rule='max')
    np.testing.assert_allclose(scores, [0.8, 0.4], rtol=1e-6)  # noisy_or: 0.88 and 0.64
    np.testing.assert_allclose(boxes[0], [2 / 3, 0, 10 + 2 / 3, 10], rtol=1e-6)  # same WBF box


def test_two_cameras_agreeing_fuse_into_the_score_weighted_mean_box():
    # RGB sees (0,0,10,10) at 0.8, thermal (2,0,12,10) at 0.4: IoU 80/120 = 0.67 > 0.55
    boxes, scores, labels = fuse_boxes(arrays([[0, 0, 10, 10]], [[2, 0, 12, 10]]),
                                       arrays([0.8], [0.4]), [np.array([0]), np.array([0])],
                                       **NOISY_OR)
    # x1 = (0.8*0 + 0.4*2) / 1.2 = 0.6667; x2 = (0.8*10 + 0.4*12) / 1.2 = 10.6667
    np.testing.assert_allclose(boxes, [[2 / 3, 0, 10 + 2 / 3, 10]], rtol=1e-6)
    assert scores[0] == pytest.approx(1 - 0.2 * 0.6)  # noisy-or: 0.88, above both cameras
    assert labels.tolist() == [0]


def test_an_object_seen_by_one_camera_keeps_that_cameras_score_under_noisy_or():
    boxes, scores, _ = fuse_boxes(arrays([[0, 0, 10, 10]], [[50, 50, 60, 60]]),
                                  arrays([0.9], [0.6]), [np.array([1]), np.array([1])],
                                  **NOISY_OR)
    np.testing.assert_allclose(boxes, [[0, 0, 10, 10], [50, 50, 60, 60]])
    np.testing.assert_allclose(scores, [0.9, 0.6], rtol=1e-6)  # not halved
    _, avg, _ = fuse_boxes(arrays([[0, 0, 10, 10]], [[50, 50, 60, 60]]),
                           arrays([0.9], [0.6]), [np.array([1]), np.array([1])], iou=0.55,
                           rule='avg')
    np.testing.assert_allclose(avg, [0.45, 0.3], rtol=1e-6)  # WBF's avg halves them


def test_boxes_of_different_classes_or_below_the_iou_never_fuse():
    # same box, two classes: fusion is per class (duplicate suppression handles this)
    _, _, labels = fuse_boxes(arrays([[0, 0, 10, 10]], [[0, 0, 10, 10]]), arrays([0.7], [0.6]),
                              [np.array([0]), np.array([2])], **NOISY_OR)
    assert sorted(labels.tolist()) == [0, 2]
    # IoU (0,0,10,10) vs (5,0,15,10) = 50/150 = 0.33 < 0.55: two boxes
    boxes, _, _ = fuse_boxes(arrays([[0, 0, 10, 10]], [[5, 0, 15, 10]]), arrays([0.7], [0.6]),
                             [np.array([0]), np.array([0])], **NOISY_OR)
    assert len(boxes) == 2


def test_empty_inputs_give_empty_outputs():
    boxes, scores, labels = fuse_boxes([np.zeros((0, 4))] * 2, [np.zeros(0)] * 2,
                                       [np.zeros(0, np.int64)] * 2, **NOISY_OR)
    assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.shape == (0,)


def test_duplicate_suppression_drops_the_weaker_box_of_another_class_only_when_it_overlaps():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [30, 30, 40, 40]], np.float32)
    scores = np.array([0.5, 0.9, 0.4], np.float32)
    # box 0 vs box 1: IoU 90/110 = 0.82 > 0.7, box 1 scores higher -> box 0 goes
    assert suppress_duplicates(boxes, scores, 0.7).tolist() == [1, 2]
    assert suppress_duplicates(boxes, scores, 0.85).tolist() == [1, 0, 2]
