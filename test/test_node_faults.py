"""Faulty cameras, one node: fallback, honest diagnostics, recovery, one log line per problem.

One node (stale_after 0.5 s) is fed 640x480 MSRS pairs at 30 Hz through a sequence of phases:
10 s of thermal frames of the wrong size, 10 s of all-NaN thermal frames, 10 s of RGB frames
in an unsupported encoding, 3 s of thermal silence, and a burst of thermal frames with three
different layout errors, each separated by good pairs; thermal frames with a few NaN pixels
must not stop fusion. For each fault: outputs continue on the good camera within stale_after +
0.5 s, /diagnostics says WARN with the reason, fusion is back within 1 s of good frames.
"""

from dataclasses import dataclass

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from perception_rig import (
    RGB_FRAME,
    STALE_AFTER,
    THERMAL_FRAME,
    image_msg,
    key,
    load_pairs,
    running,
    stream,
)

RATE = 30.0
SKEW_NS = 2_000_000  # Rig.publish: thermal stamp - RGB stamp
TOPICS = {'rgb': '/faults/rgb/image_raw', 'thermal': '/faults/thermal/image_raw'}


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    good_camera: str | None  # the camera left when the other fails (None: no fallback)
    reason: str = ''  # in the WARN diagnostic message


PHASES = (
    Phase('good', 2.0, None),
    Phase('thermal_size', 10.0, 'rgb', 'thermal camera bad frames: size 320x240 vs 640x480'),
    Phase('masked', 3.0, None),  # 32FC1 thermal with 10 NaN pixels: still fused
    Phase('thermal_nan', 10.0, 'rgb', 'are NaN or inf'),
    Phase('good', 3.0, None),
    Phase('rgb_encoding', 10.0, 'thermal', "rgb camera bad frames: RGB camera image has "
                                           "encoding 'rgb16'"),
    Phase('good', 3.0, None),
    Phase('thermal_silent', 3.0, 'rgb', 'thermal camera silent for'),
    Phase('good', 2.0, None),
    Phase('thermal_kinds', 2.0, None),  # data length, 0x0, step too small among good frames
    Phase('good', 1.5, None),
)


@pytest.fixture(scope='module')
def frames(data_dir) -> dict:
    """Good 640x480 messages and one bad message of each kind."""
    pairs = load_pairs(data_dir, 8, 'msrs')
    kelvin = [(280.0 + 0.1 * ir).astype(np.float32) for _, ir in pairs]
    for image in kelvin:
        image.flat[::30_000] = np.nan  # 11 dead pixels of 307,200
    wrong_encoding = image_msg(pairs[0][0], 'rgb8', RGB_FRAME)
    wrong_encoding.encoding, wrong_encoding.step = 'rgb16', 6 * 640
    wrong_encoding.data = bytes(6 * 640 * 480)
    truncated = image_msg(pairs[0][1], 'mono8', THERMAL_FRAME)
    truncated.data = truncated.data[: len(truncated.data) // 2]
    empty = image_msg(np.zeros((0, 0), np.uint8), 'mono8', THERMAL_FRAME)
    short_step = image_msg(pairs[0][1], 'mono8', THERMAL_FRAME)
    short_step.step = 600
    return {
        'rgb': [image_msg(rgb, 'rgb8', RGB_FRAME) for rgb, _ in pairs],
        'thermal': [image_msg(ir, 'mono8', THERMAL_FRAME) for _, ir in pairs],
        'masked': [image_msg(k, '32FC1', THERMAL_FRAME) for k in kelvin],
        'small': image_msg(np.zeros((240, 320), np.uint8), 'mono8', THERMAL_FRAME),
        'nan': image_msg(np.full((480, 640), np.nan, np.float32), '32FC1', THERMAL_FRAME),
        'rgb16': wrong_encoding,
        'kinds': [truncated, empty, short_step],
    }


def schedule() -> list[tuple[Phase, int, int]]:
    """(phase, index within the phase, phase index) of every frame published."""
    return [(phase, k, n) for n, phase in enumerate(PHASES)
            for k in range(int(phase.seconds * RATE))]


def make_pair(frames: dict, phase: Phase, k: int, i: int) -> tuple:
    """The (RGB, thermal) messages of frame ``i``, the ``k``-th of ``phase``."""
    rgb, thermal = frames['rgb'][i % 8], frames['thermal'][i % 8]
    if phase.name == 'thermal_size':
        thermal = frames['small']
    elif phase.name == 'masked':
        thermal = frames['masked'][i % 8]
    elif phase.name == 'thermal_nan':
        thermal = frames['nan']
    elif phase.name == 'rgb_encoding':
        rgb = frames['rgb16']
    elif phase.name == 'thermal_silent':
        thermal = None
    elif phase.name == 'thermal_kinds' and k % 4 == 3:
        thermal = frames['kinds'][(k // 4) % 3]
    return rgb, thermal


def test_faulty_cameras_fall_back_report_why_and_recover(toy_model, frames, tmp_path) -> None:
    plan = schedule()
    with running('faults', toy_model, tmp_path) as (node, rig):
        rig.wait_for_status(lambda v: v['state'] == 'waiting', 'first diagnostics')
        published = stream(rig, len(plan) / RATE,
                           lambda i: make_pair(frames, *plan[i][:2], i), RATE)
        thermal_sent = sum(make_pair(frames, *plan[i][:2], i)[1] is not None
                           for i in range(len(plan)))
        final = rig.wait_until_idle({'rgb': len(plan), 'thermal': thermal_sent})
    statuses = rig.statuses()
    masks = rig.outputs['segmentation']
    outputs = [(at, m.header) for m, at in zip(masks.messages, masks.times, strict=True)]
    starts: dict[int, tuple[float, set]] = {}  # phase index -> (first publication, stamps)
    for (_, _, n), (_, stamp, at) in zip(plan, published, strict=True):
        ns = stamp.sec * 10**9 + stamp.nanosec + SKEW_NS  # the thermal image's stamp
        starts.setdefault(n, (at, set()))[1].update({key(stamp), divmod(ns, 10**9)})
    for index, phase in enumerate(PHASES):
        if phase.good_camera is None:
            continue
        start, stamps = starts[index]
        end = starts[index + 1][0]
        mine = [(at, h) for at, h in outputs if key(h.stamp) in stamps]
        assert mine, f'{phase.name}: no output on the {phase.good_camera} camera'
        assert mine[0][0] - start < STALE_AFTER + 0.5, f'{phase.name}: first output late'
        frame_id = RGB_FRAME if phase.good_camera == 'rgb' else THERMAL_FRAME
        assert {h.frame_id for _, h in mine} == {frame_id}, phase.name
        steady = [at for at, _ in mine if at > start + 1.0]
        assert np.diff(steady).max() < 1.0, f'{phase.name}: outputs paused for 1 s or more'
        warn = [(at, v) for at, v in statuses if at > start and v['level'] ==
                DiagnosticStatus.WARN and v['state'] == phase.good_camera]
        assert warn and warn[0][0] - start < STALE_AFTER + 0.5, f'{phase.name}: no WARN'
        assert phase.reason in warn[0][1]['message'], warn[0][1]['message']
        back = [at for at, v in statuses if at > end and v['state'] == 'fused'
                and v['level'] == DiagnosticStatus.OK]
        assert back and back[0] - end < 1.0, f'{phase.name}: fusion not back within 1 s'
    check_counts(final, plan, thermal_sent)
    check_log(node.log())


def check_counts(final: dict, plan: list, thermal_sent: int) -> None:
    """Diagnostics against what was published (best effort: up to the images lost)."""
    bad = {'rgb': sum(p.name == 'rgb_encoding' for p, _, _ in plan),
           'thermal': sum(p.name in ('thermal_size', 'thermal_nan') or
                          (p.name == 'thermal_kinds' and k % 4 == 3) for p, k, _ in plan)}
    lost = {'rgb': len(plan) - int(final['rgb_frames']),
            'thermal': thermal_sent - int(final['thermal_frames'])}
    for camera in ('rgb', 'thermal'):
        assert 0 <= lost[camera] <= 0.01 * len(plan), f'{camera}: {lost[camera]} lost'
        assert 0 <= bad[camera] - int(final[f'{camera}_bad_frames']) <= lost[camera], camera
    masked = 11 * sum(p.name == 'masked' for p, _, _ in plan)
    assert 0 <= masked - int(final['thermal_masked_pixels']) <= 11 * lost['thermal']
    assert int(final['bad_inputs']) == int(final['rgb_bad_frames']) + int(
        final['thermal_bad_frames'])
    assert final['pairs_failed'] == '0'


def check_log(log: str) -> None:
    """Every distinct problem logged, each once (throttled per topic and problem)."""
    for topic, kind in ((TOPICS['thermal'], 'size'), (TOPICS['thermal'], 'non_finite'),
                        (TOPICS['rgb'], 'encoding'), (TOPICS['thermal'], 'data_length'),
                        (TOPICS['thermal'], 'empty'), (TOPICS['thermal'], 'step')):
        lines = [li for li in log.splitlines() if f'skipping bad input on {topic} ({kind})' in li]
        assert len(lines) == 1, f'{topic} {kind}: {len(lines)} log lines'
    assert log.count('NaN/inf pixels masked') == 1
    for camera, why in (('thermal', 'bad frames: size 320x240'), ('thermal', 'bad frames: '
                        'thermal image: 307200 of 307200'), ('rgb', "bad frames: RGB camera "
                        "image has encoding 'rgb16'"), ('thermal', 'silent for')):
        assert f'{camera} camera unusable ({why}' in log, why
    assert log.count('thermal camera is back') == 3 and log.count('rgb camera is back') == 1
    assert 'inference failed' not in log
