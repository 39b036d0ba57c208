"""Message builders (rclpy and rosbags classes give the same message), status and parameters."""

from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.qos import ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from univ_core.inference import Detections
from univ_ros.messages import StatusReport, fill_detections, fill_diagnostics, fill_label_info
from univ_ros.params import PARAM_SPECS, NodeParams, describe, input_qos
from univ_ros.perception_status import PipelineStats, camera_state, change_message, pipeline_report
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


@pytest.mark.parametrize(
    'mode, live, seen, expected',
    [
        ('fused', ('rgb', 'thermal'), {'rgb', 'thermal'}, ('OK', 'fused')),
        ('fused', ('rgb',), {'rgb', 'thermal'}, ('WARN', 'rgb')),
        ('fused', ('thermal',), {'rgb', 'thermal'}, ('WARN', 'thermal')),
        ('fused', ('rgb',), {'rgb'}, ('WARN', 'rgb')),  # thermal never seen: still a fault
        ('auto', ('rgb',), {'rgb'}, ('OK', 'rgb')),  # auto: a one-camera rig is fine
        ('auto', ('rgb',), {'rgb', 'thermal'}, ('WARN', 'rgb')),  # ... but a camera lost is not
        ('fused', (), set(), ('WARN', 'waiting')),
    ],
)
def test_camera_state(mode, live, seen, expected) -> None:
    level, state, message = camera_state(mode, ('rgb', 'thermal'), live, seen)
    assert (level, state) == expected and message


def test_camera_state_single_camera_modes() -> None:
    assert camera_state('thermal', ('thermal',), ('thermal',), {'thermal'})[:2] == (
        'OK',
        'thermal',
    )
    assert camera_state('rgb', ('rgb',), (), {'rgb'})[:2] == ('WARN', 'waiting')


def test_change_message() -> None:
    stale = StreamChange('thermal', True, 0.61)
    assert change_message(stale, 'fused', ('rgb',), {'rgb', 'thermal'}) == (
        True,
        'thermal camera silent for 0.6 s: continuing on rgb',
    )
    assert change_message(stale, 'auto', ('rgb',), {'rgb'})[0] is False
    assert change_message(StreamChange('thermal', False, 0.0), 'fused', (), set()) == (
        False,
        'thermal camera is back',
    )


def test_pipeline_report_counts_and_qos_error() -> None:
    stats = PipelineStats(('rgb', 'thermal'))
    stats.arrived('rgb')
    stats.paired(0.002)
    stats.processed('fused', 0.05, 0.08)
    slot, sync = SlotStats(put=10, dropped=6, taken=3, waiting=1), SyncStats(22, 10, 2, 0, 0)
    report = pipeline_report(
        'n: pipeline',
        'cpu',
        'fused',
        ('OK', 'fused', 'running fused'),
        {'rgb': 30.0, 'thermal': 29.5},
        stats,
        slot,
        sync,
    )
    v = report.values
    assert report.level == 'OK' and v['state'] == 'fused'
    assert v['pairs_in'] == v['pairs_processed'] + v['pairs_dropped'] + v['pairs_waiting']
    assert v['thermal_age_s'] == 'never' and v['rgb_age_s'] < 1.0
    assert v['processing_ms'] == pytest.approx(50.0) and v['skew_ms'] == pytest.approx(2.0)
    assert v['sync_misses'] == 2 and v['processed_fused'] == 1
    stats.qos_incompatible()
    report = pipeline_report(
        'n: pipeline', 'cpu', 'fused', ('OK', 'fused', 'running fused'), {}, stats, slot, sync
    )
    assert report.level == 'ERROR' and 'incompatible QoS' in report.message


def test_node_params_checks() -> None:
    assert NodeParams(mode='thermal').streams == ('thermal',)
    assert NodeParams(mode='auto').streams == ('rgb', 'thermal')
    for bad in (
        {'mode': 'stereo'},
        {'qos_reliability': 'best'},
        {'input_size': (1, 2, 3)},
        {'homography': (1.0,) * 8},
    ):
        with pytest.raises(ValueError, match='parameter'):
            NodeParams(**bad)
    assert input_qos(NodeParams()).reliability == ReliabilityPolicy.BEST_EFFORT
    assert input_qos(NodeParams(qos_reliability='reliable', qos_depth=2)).depth == 2


def test_every_parameter_described_with_range_where_bounded() -> None:
    for spec in PARAM_SPECS:
        descriptor = describe(spec)
        assert len(descriptor.description) > 20 and descriptor.read_only == spec.read_only
        ranges = [*descriptor.floating_point_range, *descriptor.integer_range]
        assert len(ranges) == (spec.bounds is not None), spec.name
    assert {s.name for s in PARAM_SPECS if not s.read_only} == {
        'stale_after',
        'score_threshold',
        'nms_iou',
        'publish_color',
    }
