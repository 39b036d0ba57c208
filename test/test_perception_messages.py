"""Message builders (rclpy and rosbags classes give the same message) and the node status."""

from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from univ_core.inference import Detections
from univ_ros.messages import StatusReport, fill_detections, fill_diagnostics, fill_label_info
from univ_ros.perception_status import PipelineStats, camera_state, change_message, pipeline_report
from univ_ros.replay.scoring import boxes_from_msg
from univ_ros.stream_watch import StreamChange
from univ_ros.sync import SlotStats, SyncStats

VISION_MSGS = Path(__file__).resolve().parents[1] / 'univ_ros/interfaces/vision_msgs/msg'
DETECTIONS = Detections(
    boxes=np.array([[10, 20, 50, 100], [0.5, 1.5, 2.5, 3.5]], np.float32),
    class_ids=np.array([2, 0]),
    scores=np.array([0.9, 0.25], np.float32),
    class_names=['car', 'person'],
)


@pytest.fixture(scope='module')
def store():
    store = get_typestore(Stores.ROS2_JAZZY)
    for path in sorted(VISION_MSGS.glob('*.msg')):
        store.register(get_types_from_msg(path.read_text(), f'vision_msgs/msg/{path.stem}'))
    return store


def headers(store) -> tuple[Header, object]:
    """The same header as an rclpy and as a rosbags message."""
    ros = Header(frame_id='rgb_optical')
    ros.stamp.sec, ros.stamp.nanosec = 1700000000, 123456789
    time = store.types['builtin_interfaces/msg/Time'](sec=1700000000, nanosec=123456789)
    return ros, store.types['std_msgs/msg/Header'](stamp=time, frame_id='rgb_optical')


def same_message(store, ros_msg: object, bag_msg: object, type_name: str) -> None:
    """Both serialised (CDR, as on the wire and in bags) read back as the same message."""
    kind = type(ros_msg)
    from_bag = deserialize_message(bytes(store.serialize_cdr(bag_msg, type_name)), kind)
    assert from_bag == deserialize_message(serialize_message(ros_msg), kind)


def test_detections_fields_and_same_message_in_both_libraries(store) -> None:
    ros_header, bag_header = headers(store)
    msg = fill_detections(Detection2DArray(), DETECTIONS, ros_header)
    first, second = msg.detections
    assert msg.header == first.header == ros_header
    assert (first.bbox.center.position.x, first.bbox.center.position.y) == (30.0, 60.0)
    assert (first.bbox.size_x, first.bbox.size_y) == (40.0, 80.0)
    assert first.results[0].hypothesis.class_id == 'car'
    assert first.results[0].hypothesis.score == pytest.approx(0.9)
    assert second.results[0].hypothesis.class_id == 'person'
    assert second.results[0].pose.pose.orientation.w == 1.0
    empty = store.types['vision_msgs/msg/Detection2DArray'](header=bag_header, detections=[])
    bag = fill_detections(empty, DETECTIONS, bag_header, lambda name: store.types[name])
    same_message(store, msg, bag, 'vision_msgs/msg/Detection2DArray')


def test_label_info_and_diagnostics_same_message_in_both_libraries(store) -> None:
    ros_header, bag_header = headers(store)
    types = lambda name: store.types[name]  # noqa: E731
    names = ['unlabeled', 'car', 'person']
    ros = fill_label_info(LabelInfo(), names, ros_header, 0.3)
    assert [(c.class_id, c.class_name) for c in ros.class_map] == list(enumerate(names))
    empty = types('vision_msgs/msg/LabelInfo')(header=bag_header, class_map=[], threshold=0.0)
    same_message(
        store,
        ros,
        fill_label_info(empty, names, bag_header, 0.3, types),
        'vision_msgs/msg/LabelInfo',
    )
    report = StatusReport(
        'n: pipeline', 'WARN', 'thermal silent', 'cpu', {'rate_hz': 29.97012, 'dropped': 3}
    )
    ros = fill_diagnostics(DiagnosticArray(), [report], ros_header)
    (status,) = ros.status
    assert status.level == DiagnosticStatus.WARN
    assert [(kv.key, kv.value) for kv in status.values] == [('rate_hz', '29.97'), ('dropped', '3')]
    empty = types('diagnostic_msgs/msg/DiagnosticArray')(header=bag_header, status=[])
    same_message(
        store,
        ros,
        fill_diagnostics(empty, [report], bag_header, types),
        'diagnostic_msgs/msg/DiagnosticArray',
    )


def test_status_report_rejects_unknown_level() -> None:
    with pytest.raises(ValueError, match='level'):
        StatusReport('n', 'WARNING', 'm')


def test_class_ids_as_integers_map_back_through_label_info(store) -> None:
    ros_header, _ = headers(store)
    msg = fill_detections(Detection2DArray(), DETECTIONS, ros_header, class_id='id')
    assert [d.results[0].hypothesis.class_id for d in msg.detections] == ['2', '0']
    label_info = fill_label_info(LabelInfo(), ['person', 'bicycle', 'car'], ros_header, 0.3)
    names = [c.class_name for c in label_info.class_map]
    boxes, mapped, scores = boxes_from_msg(msg, names)
    assert mapped == ['car', 'person']
    np.testing.assert_allclose(boxes, DETECTIONS.boxes)
    assert boxes_from_msg(msg)[1] == ['2', '0']  # without the map: the text as sent
    named = fill_detections(Detection2DArray(), DETECTIONS, ros_header)
    assert boxes_from_msg(named, names)[1] == ['car', 'person']  # names pass through
    with pytest.raises(ValueError, match='class_id'):
        fill_detections(Detection2DArray(), DETECTIONS, ros_header, class_id='label')


REASONS = {'rgb': 'silent for 0.7 s', 'thermal': 'bad frames: size 320x240 vs 640x480'}


@pytest.mark.parametrize(
    'mode, live, seen, expected',
    [
        ('fused', ('rgb', 'thermal'), {'rgb', 'thermal'}, ('OK', 'fused', 'running fused')),
        ('fused', ('rgb',), {'rgb', 'thermal'},
         ('WARN', 'rgb', 'thermal camera bad frames: size 320x240 vs 640x480: running on rgb '
          'only')),
        ('fused', ('thermal',), {'rgb', 'thermal'},
         ('WARN', 'thermal', 'rgb camera silent for 0.7 s: running on thermal only')),
        ('fused', ('rgb',), {'rgb'}, ('WARN', 'rgb', None)),  # thermal never seen: a fault
        ('auto', ('rgb',), {'rgb'}, ('OK', 'rgb', None)),  # auto: a one-camera rig is fine
        ('auto', ('rgb',), {'rgb', 'thermal'}, ('WARN', 'rgb', None)),  # a camera lost is not
        ('fused', (), set(), ('WARN', 'waiting', 'no image yet from rgb, thermal')),
        ('fused', (), {'rgb', 'thermal'},
         ('WARN', 'waiting', 'no usable camera: rgb camera silent for 0.7 s; thermal camera '
          'bad frames: size 320x240 vs 640x480')),
    ],
)
def test_camera_state_says_why(mode, live, seen, expected) -> None:
    level, state, message = camera_state(mode, ('rgb', 'thermal'), live, seen, REASONS)
    assert (level, state) == expected[:2]
    assert message == expected[2] or expected[2] is None


def test_camera_state_single_camera_modes() -> None:
    assert camera_state('thermal', ('thermal',), ('thermal',), {'thermal'}, {})[:2] == (
        'OK', 'thermal')
    assert camera_state('rgb', ('rgb',), (), {'rgb'}, {'rgb': 'silent for 2.0 s'}) == (
        'WARN', 'waiting', 'no usable camera: rgb camera silent for 2.0 s')


def test_change_message() -> None:
    stale = StreamChange('thermal', True, 'bad frames: 307200 of 307200 pixels NaN')
    assert change_message(stale, 'fused', ('rgb',), {'rgb', 'thermal'}) == (
        True, 'thermal camera unusable (bad frames: 307200 of 307200 pixels NaN): continuing '
              'on rgb')
    assert change_message(stale, 'auto', ('rgb',), {'rgb'})[0] is False
    assert change_message(StreamChange('thermal', False, ''), 'fused', (), set()) == (
        False, 'thermal camera is back')


def test_pipeline_report_accounts_for_every_pair_and_frame() -> None:
    stats = PipelineStats(('rgb', 'thermal'))
    for _ in range(3):
        stats.received('rgb')
        stats.good('rgb')
    stats.received('thermal')
    stats.bad('thermal')
    stats.received('thermal')
    stats.good('thermal', masked_pixels=7)
    stats.paired(0.002)
    stats.processed('fused', 0.05, 0.08, 0.09)
    stats.processed('rgb', 0.03, 0.04, 0.05)
    stats.failed()
    slot, sync = SlotStats(put=10, dropped=5, taken=4, waiting=1), SyncStats(22, 10, 2, 0, 0)
    head = {'requested_mode': 'fused', 'model': 'loaded'}
    report = pipeline_report('n: pipeline', 'cpu', head, ('OK', 'fused', 'running fused'),
                             {'rgb': 30.0, 'thermal': 29.5}, stats, slot, sync)
    v = report.values
    assert report.level == 'OK' and v['state'] == 'fused' and v['model'] == 'loaded'
    assert (v['pairs_processed'], v['pairs_failed'], v['pairs_in_progress']) == (2, 1, 1)
    assert v['pairs_in'] == (v['pairs_processed'] + v['pairs_failed'] + v['pairs_dropped']
                             + v['pairs_waiting'] + v['pairs_in_progress'])
    assert (v['rgb_frames'], v['thermal_frames'], v['thermal_bad_frames']) == (3, 2, 1)
    assert v['bad_inputs'] == 1 and v['thermal_masked_pixels'] == 7
    assert v['processing_ms'] == pytest.approx(40.0) and v['latency_ms'] == pytest.approx(60.0)
    assert v['input_age_ms'] == pytest.approx(70.0) and v['skew_ms'] == pytest.approx(2.0)
    assert v['sync_misses'] == 2 and (v['processed_fused'], v['processed_rgb']) == (1, 1)
    stats.qos_incompatible()
    waiting = ('WARN', 'waiting', 'no image yet from rgb')  # the mismatch may be why
    report = pipeline_report('n: pipeline', 'cpu', head, waiting, {}, stats, slot, sync)
    assert report.level == 'ERROR' and 'incompatible QoS' in report.message
    report = pipeline_report('n: pipeline', 'cpu', head, ('OK', 'fused', 'running fused'), {},
                             stats, slot, sync)  # streaming again: not an error for ever
    assert report.level == 'WARN' and '1 incompatible QoS event' in report.message
