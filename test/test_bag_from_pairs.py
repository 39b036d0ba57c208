"""`univ bag-from-pairs` on the real msrs_mini: bags reopened with rosbags and read by rclpy."""

import argparse
from pathlib import Path

import numpy as np
import pytest
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import Image as RclpyImage
from vision_msgs.msg import Detection2DArray as RclpyDetections

from univ_core.data.labelled import open_labelled_dataset
from univ_ros.replay import bag_from_pairs
from univ_ros.replay import topics as T
from univ_ros.replay.bagio import stamp_ns, typestore

PAIRS = 4
SKEW_NS = 3_000_000  # default --skew-ms 3
PERIOD_NS = round(1e9 / 30)


def make_bag(data_dir: Path, out: Path, *extra: str) -> int:
    parser = argparse.ArgumentParser()
    bag_from_pairs.add_arguments(parser)
    args = parser.parse_args([str(data_dir / 'msrs_mini'), '--format', 'msrs', '--out',
                              str(out), '--limit', str(PAIRS), *extra])
    return bag_from_pairs.main(args)


def read_all(bag: Path) -> dict[str, list[tuple[int, bytes]]]:
    """topic -> [(bag time ns, raw CDR)] read with plain rosbags."""
    messages: dict[str, list[tuple[int, bytes]]] = {}
    with Reader(bag) as reader:
        for connection, timestamp, raw in reader.messages():
            messages.setdefault(connection.topic, []).append((timestamp, bytes(raw)))
    return messages


def decode(raw: bytes, msgtype: str):
    return typestore().deserialize_cdr(raw, msgtype)


@pytest.mark.parametrize('storage,compress', [('mcap', False), ('sqlite3', False),
                                              ('mcap', True), ('sqlite3', True)])
def test_bag_reopens_with_images_stamps_and_ground_truth(data_dir, tmp_path, storage, compress):
    out = tmp_path / 'bag'
    assert make_bag(data_dir, out, '--storage', storage, *(['--compress'] if compress else [])) \
        == 0
    messages = read_all(out)
    with Reader(out) as reader:
        assert (reader.compression_mode or None) == ('message' if compress and
                                                     storage == 'sqlite3' else None)
        types = {c.topic: c.msgtype for c in reader.connections}
    if storage == 'mcap':  # zstd chunk compression is named in each chunk record
        assert (b'zstd' in (out / 'bag.mcap').read_bytes()) == compress
    assert types == {topic: T.TYPES[topic] for topic in (
        T.RGB_IMAGE, T.RGB_INFO, T.THERMAL_IMAGE, T.THERMAL_INFO, T.GT_RGB_DETECTIONS,
        T.GT_THERMAL_DETECTIONS, T.GT_DETECTION_LABELS)}
    assert {t: len(m) for t, m in messages.items() if t != T.GT_DETECTION_LABELS} == \
        dict.fromkeys(set(types) - {T.GT_DETECTION_LABELS}, PAIRS)
    labels = decode(messages[T.GT_DETECTION_LABELS][0][1], T.LABEL_INFO)
    assert [c.class_name for c in labels.class_map] == ['person', 'bicycle', 'car']

    dataset = open_labelled_dataset(data_dir / 'msrs_mini', 'msrs_det', 'train')
    first_rgb = messages[T.RGB_IMAGE][0][0]
    for index in range(PAIRS):
        sample = dataset[index]
        rgb_time, rgb_raw = messages[T.RGB_IMAGE][index]
        thermal_time, thermal_raw = messages[T.THERMAL_IMAGE][index]
        rgb, thermal = decode(rgb_raw, T.IMAGE), decode(thermal_raw, T.IMAGE)
        # bag time = header stamp; 30 Hz; thermal exactly 3 ms after RGB
        assert stamp_ns(rgb.header) == rgb_time == first_rgb + index * PERIOD_NS
        assert stamp_ns(thermal.header) == thermal_time == rgb_time + SKEW_NS
        assert (rgb.encoding, thermal.encoding) == ('rgb8', 'mono8')
        assert (rgb.header.frame_id, thermal.header.frame_id) == (T.RGB_FRAME, T.THERMAL_FRAME)
        pixels = np.frombuffer(rgb.data, np.uint8).reshape(rgb.height, rgb.width, 3)
        assert np.array_equal(pixels, sample['rgb'])
        assert np.array_equal(np.frombuffer(thermal.data, np.uint8).reshape(sample['thermal']
                                                                            .shape),
                              sample['thermal'])
        info = decode(messages[T.THERMAL_INFO][index][1], T.CAMERA_INFO)
        assert (info.width, info.height, stamp_ns(info.header)) == \
            (thermal.width, thermal.height, thermal_time)
        for topic, key, header in ((T.GT_RGB_DETECTIONS, 'rgb', rgb.header),
                                   (T.GT_THERMAL_DETECTIONS, 'ir', thermal.header)):
            time, raw = messages[topic][index]
            truth = decode(raw, T.DETECTION_ARRAY)
            assert time == stamp_ns(truth.header) == stamp_ns(header)
            centres = [(d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x,
                        d.bbox.size_y) for d in truth.detections]
            boxes = np.array([[x - w / 2, y - h / 2, x + w / 2, y + h / 2]
                              for x, y, w, h in centres]).reshape(-1, 4)
            np.testing.assert_allclose(boxes, sample[f'boxes_{key}'], atol=1e-3)
            names = [d.results[0].hypothesis.class_id for d in truth.detections]
            assert names == [dataset.class_names[k] for k in sample[f'labels_{key}']]


def test_real_ros_messages_read_the_bags_cdr(data_dir, tmp_path):
    out = tmp_path / 'bag'
    make_bag(data_dir, out)
    messages = read_all(out)
    image = deserialize_message(messages[T.RGB_IMAGE][0][1], RclpyImage)
    assert (image.encoding, image.width, image.height) == ('rgb8', 640, 480)
    truth = deserialize_message(messages[T.GT_RGB_DETECTIONS][1][1], RclpyDetections)
    ours = decode(messages[T.GT_RGB_DETECTIONS][1][1], T.DETECTION_ARRAY)
    assert len(truth.detections) == len(ours.detections) > 0
    assert truth.detections[0].bbox.size_x == pytest.approx(ours.detections[0].bbox.size_x)


def test_existing_output_needs_force(data_dir, tmp_path):
    out = tmp_path / 'bag'
    out.mkdir()
    (out / 'keep.txt').write_text('mine')
    with pytest.raises(ValueError, match='exists; pass --force'):
        make_bag(data_dir, out)
    assert (out / 'keep.txt').read_text() == 'mine'
    assert make_bag(data_dir, out, '--force') == 0
    assert not (out / 'keep.txt').exists() and len(read_all(out)[T.RGB_IMAGE]) == PAIRS
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bag']  # no temporary left behind


def test_unlabelled_dataset_has_no_ground_truth_topics(data_dir, tmp_path):
    parser = argparse.ArgumentParser()
    bag_from_pairs.add_arguments(parser)
    out = tmp_path / 'roadscene'  # RoadScene has no labels (LLVIP has boxes for 9 pairs)
    args = parser.parse_args([str(data_dir / 'roadscene'), '--format', 'auto', '--out', str(out),
                              '--limit', '2', '--rate', '10', '--skew-ms', '-5'])
    assert bag_from_pairs.main(args) == 0
    messages = read_all(out)
    assert set(messages) == {T.RGB_IMAGE, T.RGB_INFO, T.THERMAL_IMAGE, T.THERMAL_INFO}
    (rgb0, _), (rgb1, _) = messages[T.RGB_IMAGE]
    assert rgb1 - rgb0 == 100_000_000
    assert messages[T.THERMAL_IMAGE][0][0] - rgb0 == -5_000_000


def test_bad_arguments_name_the_problem(data_dir, tmp_path):
    with pytest.raises(ValueError, match='under half a frame'):
        make_bag(data_dir, tmp_path / 'b', '--skew-ms', '40')
    with pytest.raises(FileNotFoundError, match='nowhere'):
        bag_from_pairs.main(argparse.Namespace(
            dataset=tmp_path / 'nowhere', format='msrs', out=tmp_path / 'c', split='train',
            rate=30.0, skew_ms=3.0, storage='mcap', compress=False, limit=None, force=False,
            transport='raw'))
