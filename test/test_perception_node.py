"""Acceptance tests of the perception node: real rclpy, two processes, real RGB-T pairs.

The node runs in a subprocess (test/node_harness.py) on a tiny random UNIV model; this process
publishes MSRS pairs as two cameras (best-effort, 30 Hz) and listens to every output. conftest
puts the session on a random, localhost-only domain. The load test runs 60 s, as the issue asks.
"""

import contextlib
import re
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from perception_rig import (
    RGB_FRAME,
    THERMAL_FRAME,
    NodeProcess,
    Rig,
    image_msg,
    load_pairs,
    stream,
)
from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from toy import MFNET_CLASSES, MSRS_DET_CLASSES, write_toy_model

from univ_ros.conversions import stamp_seconds
from univ_ros.params import CLASS_SPECS, PARAM_SPECS

LOAD_SECONDS = 60.0  # as the issue asks
WIDTH, HEIGHT = 320, 240  # the MSRS pairs halved (see perception_rig.load_pairs)
FRAME = 1.0 / 30.0


@pytest.fixture(scope='module')
def toy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_model(tmp_path_factory.mktemp('model') / 'toy.safetensors')


@pytest.fixture(scope='module')
def cameras(data_dir: Path) -> dict:
    """Camera messages of 8 real pairs: rgb8, infrared as mono8 and as mono16 (x257)."""
    pairs = load_pairs(data_dir, 8)
    return {
        'rgb': [image_msg(rgb, 'rgb8', RGB_FRAME) for rgb, _ in pairs],
        'mono8': [image_msg(ir, 'mono8', THERMAL_FRAME) for _, ir in pairs],
        'mono16': [
            image_msg(ir.astype(np.uint16) * 257, 'mono16', THERMAL_FRAME) for _, ir in pairs
        ],
    }


@contextlib.contextmanager
def running(
    name: str,
    toy_model: Path,
    log_dir: Path,
    predict_seconds: float = 0.0,
    camera_qos: QoSProfile | None = None,
    wait: bool = True,
    **params,
):
    """A node process in namespace /<name> and its rig; both stopped afterwards."""
    params = {
        'model': str(toy_model),
        'device': 'cpu',
        'max_detections': 20,
        'stale_after': 0.5,
        **params,
    }
    node = NodeProcess(f'/{name}', params, log_dir / f'{name}.log', predict_seconds)
    rig = Rig(f'/{name}', *([camera_qos] if camera_qos else []))
    try:
        if wait:
            rig.wait_for_node(node)
        yield node, rig
    finally:
        rig.close()
        assert node.stop() == 0, f'node exit code != 0:\n{node.log()[-3000:]}'


def key(stamp: object) -> tuple[int, int]:
    return stamp.sec, stamp.nanosec


def check_detections(msg: object, header: object) -> None:
    assert msg.header == header
    for det in msg.detections:
        assert det.header == header
        (result,) = det.results
        assert result.hypothesis.class_id in MSRS_DET_CLASSES
        assert 0.0 <= result.hypothesis.score <= 1.0
        cx, cy = det.bbox.center.position.x, det.bbox.center.position.y
        assert det.bbox.size_x >= 0 and det.bbox.size_y >= 0
        assert -1 <= cx - det.bbox.size_x / 2 and cx + det.bbox.size_x / 2 <= WIDTH + 1
        assert -1 <= cy - det.bbox.size_y / 2 and cy + det.bbox.size_y / 2 <= HEIGHT + 1


def test_real_pairs_every_output_has_the_rgb_header(toy_model, cameras, tmp_path) -> None:
    with running('real', toy_model, tmp_path, score_threshold=0.05) as (node, rig):

        def pair(i: int):  # 5 s of mono8 infrared, then 5 s of mono16
            k = i % 8
            return cameras['rgb'][k], cameras['mono8' if i < 150 else 'mono16'][k]

        published = dict((key(stamp), i) for i, stamp in stream(rig, 10.0, pair))
        time.sleep(1.0)
        label_info = rig.late_label_info()  # subscribed 11 s after the node published it
    masks, dets = rig.outputs['segmentation'].messages, rig.outputs['detections'].messages
    assert len(masks) >= 30 and len(dets) == len(masks)
    assert {published[key(m.header.stamp)] < 150 for m in masks} == {True, False}  # both IRs
    for mask, det in zip(masks, dets, strict=True):
        assert key(mask.header.stamp) in published and mask.header.frame_id == RGB_FRAME
        assert (mask.encoding, mask.width, mask.height, mask.step) == (
            'mono8',
            WIDTH,
            HEIGHT,
            WIDTH,
        )
        ids = np.unique(np.frombuffer(bytes(mask.data), np.uint8))
        assert set(ids.tolist()) <= set(range(len(MFNET_CLASSES))) | {255}
        check_detections(det, mask.header)
    assert sum(len(d.detections) for d in dets) > 0
    colors = rig.outputs['color'].messages
    assert colors and all(
        c.encoding == 'rgb8'
        and c.header.frame_id == RGB_FRAME
        and key(c.header.stamp) in published
        for c in colors
    )
    assert [(c.class_id, c.class_name) for c in label_info.class_map] == list(
        enumerate(MFNET_CLASSES)
    )
    assert 'QoS reliability=best_effort' in node.log()


def test_slow_predictor_drops_old_pairs_without_backlog(toy_model, cameras, tmp_path) -> None:
    with running('load', toy_model, tmp_path, predict_seconds=3 * FRAME) as (node, rig):
        rss = []

        def pair(i: int):
            if i == 90:
                rss.append(node.rss_mb())  # after 3 s of load
            return cameras['rgb'][i % 8], cameras['mono8'][i % 8]

        published = stream(rig, LOAD_SECONDS, pair)
        rss.append(node.rss_mb())
        mid_run = rig.status_values(rig.diagnostics.messages[-2])
        time.sleep(2.5)  # the worker finishes; then one diagnostics message with final counts
        final = rig.last_status()
    seg = rig.outputs['segmentation']
    processed, dropped = int(final['pairs_processed']), int(final['pairs_dropped'])
    pairs_in = int(final['pairs_in'])
    assert final['pairs_waiting'] == '0'
    assert len(seg.messages) == processed  # every processed pair was published
    assert dropped == pairs_in - processed  # the dropped counter = pairs not processed
    assert pairs_in >= 0.9 * len(published)  # callbacks kept up with 30 Hz input
    assert 0.5 * LOAD_SECONDS / (3 * FRAME) <= processed <= LOAD_SECONDS / (3 * FRAME) + 2
    assert float(mid_run['rgb_rate_hz']) > 25 and float(mid_run['thermal_rate_hz']) > 25
    latency = [
        wall - stamp_seconds(m.header) for m, wall in zip(seg.messages, seg.wall, strict=True)
    ]
    third = len(latency) // 3
    print(
        f'load: {len(published)} pairs published, {pairs_in} reached the slot, {processed} '
        f'processed, {dropped} dropped; latency max {max(latency):.3f} s; RSS {rss[0]:.0f} -> '
        f'{rss[-1]:.0f} MB; processing {final["processing_ms"]} ms'
    )
    assert max(latency) < 0.5, f'latency up to {max(latency):.2f} s: a backlog'
    assert np.mean(latency[-third:]) < np.mean(latency[:third]) + 0.05  # not growing
    assert rss[-1] - rss[0] < 50, f'node memory grew {rss[-1] - rss[0]:.0f} MB'


def test_thermal_camera_stops_and_returns(toy_model, cameras, tmp_path) -> None:
    with running('fault', toy_model, tmp_path) as (node, rig):

        def pair(i: int):  # thermal silent from 3 s to 6 s
            return cameras['rgb'][i % 8], None if 90 <= i < 180 else cameras['mono8'][i % 8]

        start = time.monotonic()
        stream(rig, 9.0, pair)
        time.sleep(0.5)
    stop, back = start + 3.0, start + 6.0
    seg, diag = rig.outputs['segmentation'], rig.diagnostics
    times = np.array(seg.times)
    around_stop = times[(times > stop - 1.0) & (times < back)]
    assert np.diff(around_stop).max() < 1.0, 'outputs paused for a second or more'
    assert (times > stop + 1.0).sum() > 10 and (times > back + 1.0).sum() > 10
    statuses = [
        (at, rig.status_values(m)) for m, at in zip(diag.messages, diag.times, strict=True)
    ]
    warn = [
        at
        for at, s in statuses
        if at > stop and s['level'] == DiagnosticStatus.WARN and s['state'] == 'rgb'
    ]
    assert warn and warn[0] - stop < 1.0, 'no WARN diagnostic within 1 s of the thermal stop'
    fused_again = [
        at
        for at, s in statuses
        if at > back and s['state'] == 'fused' and s['level'] == DiagnosticStatus.OK
    ]
    assert fused_again and fused_again[0] - back < 1.0
    assert int(statuses[-1][1]['processed_rgb']) > 10
    assert re.search(r'WARN.*thermal camera silent', node.log())


def test_bad_inputs_are_skipped_with_one_log_line_each(toy_model, cameras, tmp_path) -> None:
    wrong_encoding = image_msg(np.zeros((HEIGHT, WIDTH, 3), np.uint8), 'rgb8', RGB_FRAME)
    wrong_encoding.encoding = 'yuv422'
    truncated = image_msg(np.zeros((HEIGHT, WIDTH), np.uint8), 'mono8', THERMAL_FRAME)
    truncated.data = truncated.data[: len(truncated.data) // 2]
    small_thermal = image_msg(
        np.zeros((HEIGHT // 2, WIDTH // 2), np.uint8), 'mono8', THERMAL_FRAME
    )
    with running('bad', toy_model, tmp_path) as (node, rig):

        def pair(i: int):  # every 4th pair bad, cycling through the three faults
            good = cameras['rgb'][i % 8], cameras['mono8'][i % 8]
            bad = [(wrong_encoding, good[1]), (good[0], truncated), (good[0], small_thermal)]
            return bad[(i // 4) % 3] if i % 4 == 3 else good

        stream(rig, 6.0, pair)
        time.sleep(1.5)
        status = rig.last_status()
        assert node.alive()
    log = node.log()
    for topic, problem in (
        ('/bad/rgb/image_raw', 'encoding'),
        ('/bad/thermal/image_raw', 'layout'),
        ('rgb+thermal', 'size'),
    ):
        lines = re.findall(rf'skipping bad input on {re.escape(topic)} \({problem}\)', log)
        assert len(lines) == 1, f'{topic} {problem}: {len(lines)} log lines'
    assert 30 <= int(status['bad_inputs']) <= 45  # 45 injected; best effort may lose some
    assert len(rig.outputs['segmentation'].since(time.monotonic() - 4.0)) > 10


def test_qos_mismatch_is_logged_within_seconds(toy_model, tmp_path) -> None:
    best_effort = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
    with running(
        'qos',
        toy_model,
        tmp_path,
        camera_qos=best_effort,
        wait=False,
        **{'qos.reliability': 'reliable'},
    ) as (node, rig):
        rig.wait_until(lambda: 'mode fused' in node.log(), 90, 'node start')
        took = rig.wait_until(
            lambda: 'QoS incompatible on /qos/rgb/image_raw' in node.log(),
            5.0,
            'incompatible-QoS log line',
        )
        rig.wait_until(
            lambda: (
                rig.diagnostics.messages and rig.last_status()['level'] == DiagnosticStatus.ERROR
            ),
            3.0,
            'ERROR status',
        )
    assert 'RELIABILITY' in node.log() and 'QoS reliability=reliable' in node.log()
    assert took < 5.0


def test_parameters_described_read_only_and_dynamic(toy_model, tmp_path) -> None:
    names = [f'class_{i}' for i in range(len(MFNET_CLASSES))]
    with running('params', toy_model, tmp_path, class_names=f'[{",".join(names)}]') as (_, rig):
        service = 'univ_perception/'
        specs = {spec.name: spec for spec in PARAM_SPECS + CLASS_SPECS}
        described = rig.call(
            DescribeParameters,
            service + 'describe_parameters',
            DescribeParameters.Request(names=list(specs)),
        ).descriptors
        for descriptor in described:
            assert descriptor.description == specs[descriptor.name].description
            assert descriptor.read_only == specs[descriptor.name].read_only
        got = rig.call(
            GetParameters,
            service + 'get_parameters',
            GetParameters.Request(
                names=[
                    'class_names',
                    'palette',
                    'sync_slop',
                    'qos_overrides./params/rgb/image_raw.subscription.reliability',
                ]
            ),
        ).values
        assert list(got[0].string_array_value) == names
        assert len(got[1].integer_array_value) == 3 * len(names)
        assert got[2].double_value == pytest.approx(1 / 60)
        assert got[3].string_value == 'best_effort'

        def set_value(name: str, value: object) -> bool:
            request = SetParameters.Request(
                parameters=[Parameter(name, value=value).to_parameter_msg()]
            )
            return (
                rig.call(SetParameters, service + 'set_parameters', request).results[0].successful
            )

        assert not set_value('model', '/elsewhere.safetensors')  # read-only: needs a restart
        assert not set_value('score_threshold', 1.5)  # outside [0, 1]
        assert set_value('score_threshold', 0.6) and set_value('stale_after', 2.0)
        label_info = rig.late_label_info()
    assert [c.class_name for c in label_info.class_map] == names


def test_missing_model_file_stops_with_one_clear_line(tmp_path) -> None:
    missing = tmp_path / 'no_such_model.safetensors'
    node = NodeProcess('/nomodel', {'model': str(missing), 'device': 'cpu'}, tmp_path / 'n.log')
    node.process.wait(timeout=60)
    assert node.stop() == 1
    assert re.search(
        rf'FATAL.*cannot start: no UNIV model at {re.escape(str(missing))}', node.log()
    )
    assert 'Traceback' not in node.log()
