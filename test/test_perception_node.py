"""Acceptance tests of the perception node: real rclpy, two processes, real full-size RGB-T pairs.

The node runs in a subprocess (test/node_harness.py) on a tiny random UNIV model; this process
publishes real pairs as camera drivers do (sensor-data QoS: best effort, depth 5; 30 Hz; full
size: MSRS 640x480, LLVIP 640x512) and listens to every output. conftest puts the session on a
random, localhost-only domain with the shipped Fast DDS profile. Every wait is for an event
(an output, a diagnostics message, a log line) with a generous deadline; the node's
diagnostics are checked against what this process published.
"""

import re
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from perception_rig import (
    DEADLINE,
    MAX_FRAME_LOSS,
    RGB_FRAME,
    THERMAL_FRAME,
    NodeProcess,
    Rig,
    accounted,
    assert_camera_rate,
    camera_info,
    image_msg,
    key,
    load_pairs,
    running,
    stream,
)
from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from toy import MFNET_CLASSES, MSRS_DET_CLASSES

from univ_ros.conversions import stamp_seconds
from univ_ros.params import CLASS_SPECS, PARAM_SPECS

LOAD_SECONDS = 60.0  # as the issues ask (load, and frame loss at 640x480)
FRAME = 1.0 / 30.0


@pytest.fixture(scope='module')
def msrs(data_dir: Path) -> dict:
    """640x480 camera messages of 8 real MSRS pairs: rgb8 and mono8."""
    pairs = load_pairs(data_dir, 8, 'msrs')
    return {'rgb': [image_msg(rgb, 'rgb8', RGB_FRAME) for rgb, _ in pairs],
            'mono8': [image_msg(ir, 'mono8', THERMAL_FRAME) for _, ir in pairs]}


def test_full_size_640x512_pairs_over_default_qos(toy_model, data_dir, tmp_path) -> None:
    """LLVIP 640x512 rgb8 + mono16 at 30 Hz: headers, every output, ids, camera_info, params."""
    pairs = load_pairs(data_dir, 8, 'llvip')
    rgb = [image_msg(c, 'rgb8', RGB_FRAME) for c, _ in pairs]
    thermal = [image_msg(ir.astype(np.uint16) * 257, 'mono16', THERMAL_FRAME) for _, ir in pairs]
    names = [f'class_{i}' for i in range(len(MFNET_CLASSES))]
    with running('full', toy_model, tmp_path, score_threshold=0.05,
                 class_names=f'[{",".join(names)}]') as (node, rig):
        rig.publish_info('rgb', camera_info(640, 512, RGB_FRAME))
        published = stream(rig, 6.0, lambda i: (rgb[i % 8], thermal[i % 8]))
        final = rig.wait_until_idle({'rgb': len(published), 'thermal': len(published)})
        rates = [(at, v) for at, v in rig.statuses()
                 if published[60][2] <= at <= published[-1][2]]
        label_info = rig.late_label_info()
        det_labels = rig.late_label_info('univ_perception/detections/label_info')
        check_parameters_service(rig, names)
    stamps = {key(stamp) for _, stamp, _ in published}
    masks, dets = rig.outputs['segmentation'].messages, rig.outputs['detections'].messages
    # what is checked here is each output, not throughput (the load test bounds that by the
    # node's own job time): a loaded machine processes fewer of the 180 pairs, never none
    assert len(masks) == len(dets) == int(final['pairs_processed']) >= 5
    assert accounted(final)  # after the stream ends the cameras fall silent: state 'waiting'
    for mask in masks:
        assert key(mask.header.stamp) in stamps and mask.header.frame_id == RGB_FRAME
        assert (mask.encoding, mask.width, mask.height, mask.step) == ('mono8', 640, 512, 640)
        ids = set(np.unique(np.frombuffer(bytes(mask.data), np.uint8)).tolist())
        assert ids <= set(range(len(MFNET_CLASSES))) | {255}
    by_stamp = {key(m.header.stamp): m.header for m in masks}
    detected = 0
    for det in dets:
        assert det.header == by_stamp[key(det.header.stamp)]
        for d in det.detections:
            (result,) = d.results
            assert result.hypothesis.class_id in {'0', '1', '2'}  # ids, named by LabelInfo
            cx, cy, w, h = (d.bbox.center.position.x, d.bbox.center.position.y,
                            d.bbox.size_x, d.bbox.size_y)
            assert w >= 0 and h >= 0 and -1 <= cx - w / 2 and cx + w / 2 <= 641
            assert -1 <= cy - h / 2 and cy + h / 2 <= 513
            detected += 1
    assert detected > 0
    assert [(c.class_id, c.class_name) for c in det_labels.class_map] == list(
        enumerate(MSRS_DET_CLASSES))
    assert [c.class_name for c in label_info.class_map] == names
    for name in ('color', 'debug'):
        images = rig.outputs[name].messages
        assert images and all(m.encoding == 'rgb8' and (m.width, m.height) == (640, 512)
                              and key(m.header.stamp) in stamps for m in images), name
    infos = rig.outputs['camera_info'].messages
    assert infos and all(key(i.header.stamp) in by_stamp and i.header.frame_id == RGB_FRAME
                         and i.k[0] == 500.0 and i.width == 640 for i in infos)
    received = {s: int(final[f'{s}_frames']) for s in ('rgb', 'thermal')}
    print(f'640x512 rgb8 + mono16, 30 Hz, default QoS: {len(published)} pairs published, '
          f'received {received}, {len(masks)} processed')
    assert min(received.values()) >= (1 - MAX_FRAME_LOSS) * len(published)  # full-size arrive
    assert final['bad_inputs'] == '0' and final['thermal_bad_frames'] == '0'
    assert rates, 'no diagnostics while streaming'
    # fused and OK throughout; a starved machine may stall a callback past stale_after (0.5 s)
    # and the node then says so for a moment ('silent for ...'): that is the clock, not the
    # images. Anything else (bad frames, QoS, waiting) fails, and most reports must be fused.
    fused = [v['state'] == 'fused' and v['level'] == DiagnosticStatus.OK for _, v in rates]
    shown = [(round(at, 2), v['state'], v['level'], v['message']) for at, v in rates]
    assert all(ok or 'silent for' in v['message']
               for ok, (_, v) in zip(fused, rates, strict=True)), shown
    assert sum(fused) > len(fused) / 2, shown
    for at, values in rates:
        assert_camera_rate(values['rgb_rate_hz'], published, at)
    assert 'QoS reliability=best_effort' in node.log()


def check_parameters_service(rig: Rig, names: list[str]) -> None:
    """Described, read-only and dynamic parameters through the real parameter services."""
    service, specs = 'univ_perception/', {s.name: s for s in PARAM_SPECS + CLASS_SPECS}
    described = rig.call(DescribeParameters, service + 'describe_parameters',
                         DescribeParameters.Request(names=list(specs))).descriptors
    for descriptor in described:
        assert descriptor.description == specs[descriptor.name].description
        assert descriptor.read_only == specs[descriptor.name].read_only
    got = rig.call(GetParameters, service + 'get_parameters', GetParameters.Request(names=[
        'class_names', 'palette', 'sync_slop',
        'qos_overrides./full/rgb/image_raw.subscription.reliability'])).values
    assert list(got[0].string_array_value) == names
    assert len(got[1].integer_array_value) == 3 * len(names)
    assert got[2].double_value == 0.0  # auto
    assert got[3].string_value == 'best_effort'

    def set_value(name: str, value: object) -> bool:
        request = SetParameters.Request(parameters=[Parameter(name, value=value)
                                                    .to_parameter_msg()])
        return rig.call(SetParameters, service + 'set_parameters', request).results[0].successful

    assert not set_value('model', '/elsewhere.safetensors')  # read-only: needs a restart
    assert not set_value('score_threshold', 1.5)  # outside [0, 1]
    assert set_value('score_threshold', 0.6) and set_value('stale_after', 2.0)
    info = rig.late_label_info('univ_perception/detections/label_info')
    assert info.threshold == pytest.approx(0.6)  # the latched LabelInfo says the new cut


def test_frame_loss_at_640x480_and_a_slow_failing_predictor(toy_model, msrs, tmp_path) -> None:
    """60 s of 640x480 rgb8 + mono8 at 30 Hz, default QoS, into a node slower than the cameras.

    Frame loss (images published here vs received by the node), drops without backlog, memory,
    the camera rates, and an inference failing every 10th call: counted as failed, not as
    processed, logged as what it is; stopping during inference logs nothing false.
    """
    harness = ('--predict-seconds', str(3 * FRAME), '--fail-every', '10')
    with running('load', toy_model, tmp_path, harness_args=harness) as (node, rig):
        rss = []

        def pair(i: int):
            if i == 90:
                rss.append(node.rss_mb())  # after 3 s of load
            return msrs['rgb'][i % 8], msrs['mono8'][i % 8]

        published = stream(rig, LOAD_SECONDS, pair)
        rss.append(node.rss_mb())
        final = rig.wait_until_idle({'rgb': len(published), 'thermal': len(published)})
        mid = [(at, v) for at, v in rig.statuses()
               if published[300][2] <= at <= published[-1][2]]
    seg = rig.outputs['segmentation']
    processed, failed = int(final['pairs_processed']), int(final['pairs_failed'])
    lost = {s: 1 - int(final[f'{s}_frames']) / len(published) for s in ('rgb', 'thermal')}
    latency = [wall - stamp_seconds(m.header) for m, wall in zip(seg.messages, seg.wall,
                                                                 strict=True)]
    third = len(latency) // 3
    print(f'load: 640x480 rgb8 + mono8 at 30 Hz for {LOAD_SECONDS:.0f} s, default QoS: '
          f'{len(published)} pairs published; frame loss rgb {lost["rgb"]:.2%}, thermal '
          f'{lost["thermal"]:.2%}; {final["pairs_in"]} pairs in, {processed} processed, '
          f'{failed} failed, {final["pairs_dropped"]} dropped; latency max {max(latency):.3f} '
          f's; RSS {rss[0]:.0f} -> {rss[-1]:.0f} MB; processing {final["processing_ms"]} ms')
    assert max(lost.values()) < MAX_FRAME_LOSS, f'frame loss {lost}'
    assert len(seg.messages) == processed  # every processed pair was published, no more
    assert failed == (processed + failed) // 10 >= 10  # exactly the injected failures
    assert accounted(final) and int(final['pairs_dropped']) > 0.5 * len(published)
    # the worker never idles while pairs wait: busy at least half the run at its own measured
    # speed (a loaded machine slows the harness's 0.1 s inference, so not at 0.1 s), and never
    # faster than the harness allows
    job_s = float(final['processing_ms']) / 1e3
    jobs = processed + failed
    assert 0.5 * LOAD_SECONDS <= jobs * job_s and jobs <= LOAD_SECONDS / (3 * FRAME) + 2
    assert mid, 'no diagnostics while streaming'
    for at, values in mid:  # the cameras' 30 Hz, not the node's ~10 pairs per second
        for s in ('rgb', 'thermal'):
            assert_camera_rate(values[f'{s}_rate_hz'], published, at)
    # one slot: a pair waits for at most the job in progress and its own (a backlog of 60 s of
    # 30 Hz pairs would grow to tens of seconds); bounds in the node's measured job time
    assert max(latency) < 4 * job_s + 0.5, f'latency up to {max(latency):.2f} s: a backlog'
    assert np.mean(latency[-third:]) < np.mean(latency[:third]) + job_s  # not growing
    assert rss[-1] - rss[0] < 50, f'node memory grew {rss[-1] - rss[0]:.0f} MB'
    log = node.log()
    failures = re.findall(r'inference failed \((\w+)\): (.*?);', log)
    assert failures and set(failures) == {('RuntimeError', 'injected failure')}
    assert 'skipping bad input' not in log


def test_ctrl_c_during_inference_stops_cleanly_without_false_warnings(toy_model, msrs,
                                                                      tmp_path) -> None:
    with running('busy', toy_model, tmp_path, harness_args=('--predict-seconds', '3')) as (
            node, rig):
        stream(rig, 1.0, lambda i: (msrs['rgb'][i % 8], msrs['mono8'][i % 8]))
        rig.wait_for_status(lambda v: v['pairs_in_progress'] == '1', 'a pair in inference')
    # running() sent SIGINT while predict was busy and checked exit code 0, no Traceback
    log = node.log()
    assert 'inference failed' not in log and 'skipping bad input' not in log, log[-2000:]


def test_qos_mismatch_is_logged_within_seconds(toy_model, tmp_path) -> None:
    best_effort = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
    with running('qos', toy_model, tmp_path, rig_kwargs={'camera_qos': best_effort},
                 wait=False, **{'qos.reliability': 'reliable'}) as (node, rig):
        node.wait_for_log('rgb camera: .*reliability=reliable')
        start = time.monotonic()
        node.wait_for_log('QoS incompatible on /qos/rgb/image_raw', timeout=30)
        took = time.monotonic() - start
        status = rig.wait_for_status(lambda v: v['level'] == DiagnosticStatus.ERROR,
                                     'ERROR status', timeout=30)
    assert 'incompatible QoS' in status['message'] and 'RELIABILITY' in node.log()
    print(f'incompatible QoS logged {took:.1f} s after the subscription')


@pytest.mark.parametrize(('params', 'error'), [
    ({'score_threshold': 1.5}, 'InvalidParameterValueException'),  # out of its range
    ({'stale_after': 1}, 'InvalidParameterTypeException'),  # an integer for a double
], ids=['out_of_range', 'wrong_type'])
def test_a_bad_parameter_stops_with_one_clear_line(toy_model, tmp_path, params, error) -> None:
    node = NodeProcess('/badparam', {'model': str(toy_model), 'device': 'cpu', **params},
                       tmp_path / 'n.log')
    node.process.wait(timeout=DEADLINE)
    assert node.stop() == 1
    assert re.search(rf'FATAL.*cannot start: {error}', node.log()), node.log()[-2000:]
    assert 'Traceback' not in node.log()


def test_missing_model_file_stops_with_one_clear_line(tmp_path) -> None:
    missing = tmp_path / 'no_such_model.safetensors'
    node = NodeProcess('/nomodel', {'model': str(missing), 'device': 'cpu'}, tmp_path / 'n.log')
    node.process.wait(timeout=DEADLINE)
    assert node.stop() == 1
    assert re.search(
        rf'FATAL.*cannot start: no UNIV model at {re.escape(str(missing))}', node.log()
    )
    assert 'Traceback' not in node.log()
