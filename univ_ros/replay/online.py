"""Online replay: the bag published through rclpy into the real node, outputs captured.

Measures what a vehicle would see: end-to-end latency (output arrival minus publication of the
source image, one clock), the node's own latency (its receive time to its outputs, from its
diagnostics), throughput, and for every synchronised pair of the bag either its output or why
it had none (:func:`univ_ros.replay.answers.drop_reasons`). Before the timed run one pair,
stamped 5 s before the bag, is sent until the node answers (model loaded, kernels warm); its
outputs and counters are excluded. After the last image the replay waits until the node has
answered every pair (an output or a counted drop), or for a time derived from the node's
measured processing time, and warns about pairs left unanswered.

The output bag and the scores are built afterwards (:mod:`univ_ros.replay.online_report`),
reading the ground truth as the offline replay does, from the node's outputs instead of the
Predictor's (so mAP counts the boxes the node published, above its score threshold).
"""

import itertools
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from univ_ros.replay import topics as T
from univ_ros.replay.answers import Answers, answer_timeout, wait_for_answers
from univ_ros.replay.bagio import (
    BagInput,
    BagOutput,
    BagReadError,
    deserialize,
    output_dir,
    stamp_ns,
    typestore,
)
from univ_ros.replay.online_report import (
    GT_TOPICS,
    bag_pairs,
    by_stamp,
    online_report,
    second_pass,
)
from univ_ros.replay.outputs import OutputWriter, spread
from univ_ros.replay.report import write_report
from univ_ros.replay.scoring import Scorer

WARMUP_SHIFT_NS = 5 * 10**9  # the warm-up pair is stamped this long before the bag
WARMUP_REPEATS = 30 * (WARMUP_SHIFT_NS - 10**9) // 10**9  # 1/30 s apart, ending 1 s before it


@dataclass
class OnlineConfig:
    """How to run the online replay."""

    rgb_topic: str = T.RGB_IMAGE  # RGB camera topic (published under the same name)
    thermal_topic: str = T.THERMAL_IMAGE  # thermal camera topic
    rate: float = 1.0  # playback speed: recorded rate x rate
    node: str = 'start'  # start: run univ_perception here; running: use a running one
    params_file: Path | None = None  # node parameter file passed to the started node
    params: dict = field(default_factory=dict)  # node parameters (model, mode, device, ...)
    storage: str = 'mcap'  # output bag storage
    overlays: int = 4  # overlay PNGs
    progress: bool = True  # tqdm bar while publishing
    node_timeout: float = 120.0  # seconds for the node to start and answer the warm-up pair

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f'--rate must be > 0, got {self.rate}')
        if self.node not in ('start', 'running'):
            raise ValueError(f'--node: expected start or running, got {self.node!r}')

    @property
    def mode(self) -> str:
        """The node's mode (its output frame: RGB for fused and rgb, thermal for thermal)."""
        return str(self.params.get('mode', 'fused'))


def model_classes(model: str) -> tuple[list[str] | None, list[str] | None, np.ndarray]:
    """(segmentation classes, detection classes, (C, 3) uint8 palette) of a model file."""
    from univ_core.inference.overlay import default_palette
    from univ_core.models.model_file import default_model_path, read_spec

    try:
        if model.endswith('.onnx'):  # `univ export` stores the spec in the graph's metadata
            from univ_core.inference.onnx_backend import read_onnx_metadata

            spec = read_onnx_metadata(Path(model))[0]
        else:
            spec = read_spec(Path(model) if model else default_model_path())
    except (FileNotFoundError, ValueError):  # a running node with a model we cannot see
        return None, [], default_palette(0)
    seg = list(spec.seg_classes) if spec.seg_classes else None
    palette = (np.asarray(spec.palette, np.uint8) if spec.palette is not None
               else default_palette(len(seg or [])))
    return seg, list(spec.det_classes or []), palette


def _camera_messages(bag: BagInput, config: OnlineConfig, total: int):
    """(topic, bag ns, header stamp ns, raw) of both cameras, with a progress bar."""
    bar = tqdm(total=total, unit='frame', desc='publish', disable=not config.progress)
    try:
        for topic, timestamp, raw in bag.messages([config.rgb_topic, config.thermal_topic]):
            header = deserialize(raw, bag.topics[topic].msgtype).header
            bar.update(topic == config.rgb_topic)
            yield topic, timestamp, stamp_ns(header), raw
    finally:
        bar.close()


def _warmup_pairs(bag: BagInput, config: OnlineConfig) -> Iterator[dict[str, bytes]]:
    """The bag's first image of each camera, restamped WARMUP_SHIFT_NS earlier.

    Each repetition is stamped 1/30 s later (the node's pairing relies on stamps moving
    forward), up to 1 s before the bag's first stamps; a node slower to answer gets them again
    from the start (the backward jump restarts its pairing), so no warm-up stamp is ever a
    stamp of the bag.
    """
    firsts: dict[str, Any] = {}
    for topic, _, raw in bag.messages([config.rgb_topic, config.thermal_topic]):
        firsts.setdefault(topic, deserialize(raw, bag.topics[topic].msgtype))
        if len(firsts) == 2:
            break
    starts = {topic: stamp_ns(msg.header) - WARMUP_SHIFT_NS for topic, msg in firsts.items()}
    for k in itertools.count():
        pair = {}
        for topic, msg in firsts.items():
            stamp = starts[topic] + k % WARMUP_REPEATS * 10**9 // 30
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
            pair[topic] = bytes(typestore().serialize_cdr(msg, bag.topics[topic].msgtype))
        yield pair


def _node_died(process: Any, log: Path, when: str) -> str:
    """'univ_perception exited ...' with the end of its log."""
    tail = log.read_text(errors='replace').strip().splitlines()[-3:]
    return (f'univ_perception exited with code {process.returncode} {when}; its log ({log}) '
            f'ends: {" | ".join(tail)}')


def _wait_ready(client: Any, process: Any, config: OnlineConfig,
                warmup: Iterator[dict[str, bytes]], log: Path) -> tuple[int, float]:
    """Until the node answers the warm-up pair; ValueError when it dies or times out.

    Returns:
        (warm-up pairs published, seconds from the last of them to the answer).
    """
    deadline, sent, last = time.monotonic() + config.node_timeout, 0, time.monotonic()
    while not client.outputs_of(T.DETECTIONS):
        if process is not None and process.poll() is not None:
            raise ValueError(_node_died(process, log, 'before answering'))
        if time.monotonic() > deadline:
            raise ValueError(f'no output from univ_perception on {T.DETECTIONS} within '
                             f'{config.node_timeout:.0f} s (is it running, with the camera '
                             f'topics {config.rgb_topic} and {config.thermal_topic}?)')
        if client.connected():
            pair = next(warmup)
            for topic in (config.rgb_topic, config.thermal_topic):
                client.publish(topic, pair[topic])
            sent, last = sent + 1, time.monotonic()
        time.sleep(0.2)
    return sent, time.monotonic() - last


def _processing_ms(values: dict, fallback_s: float) -> float:
    """The node's measured processing time (diagnostics), else the warm-up round trip."""
    try:
        value = float(values.get('processing_ms', 'nan'))
    except ValueError:
        value = math.nan
    return value if math.isfinite(value) else 1e3 * fallback_s


def node_cameras(bag: BagInput, config: OnlineConfig) -> dict[str, str]:
    """The started node's camera parameters (``rgb_topic``, ``rgb_transport``, ...) for the bag.

    A CompressedImage topic is published as recorded; the node subscribes to
    ``<rgb_topic>/compressed`` with ``rgb_transport: compressed``, so the topic must be named as
    image_transport names it (ValueError otherwise).
    """
    params = {}
    for camera, topic in (('rgb', config.rgb_topic), ('thermal', config.thermal_topic)):
        transport = T.CAMERA_TRANSPORTS[bag.topics[topic].msgtype]
        if transport == 'compressed' and not topic.endswith('/compressed'):
            raise ValueError(f'bag {bag.path}: the CompressedImage topic {topic} does not end '
                             f'in /compressed; the node subscribes to <{camera}_topic>/compressed '
                             '(replay it offline, without --rate, or rename it)')
        params[f'{camera}_topic'] = topic.removesuffix('/compressed') \
            if transport == 'compressed' else topic
        params[f'{camera}_transport'] = transport
    return params


def capture(bag: BagInput, config: OnlineConfig,
            log: Path) -> tuple[Any, Answers | None, dict, ValueError | None]:
    """Start (or find) the node, warm it up, publish the bag, wait for its answers.

    Returns:
        What came back, how the wait for answers ended (None when cut short), the node's
        counters before the timed run, and the error that cut the replay short (a damaged bag,
        the node dying) or None.
    """
    from sensor_msgs.msg import CompressedImage, Image

    from univ_ros.replay.publisher import ReplayClient, start_node, stop_node

    process = None
    if config.node == 'start':
        process = start_node(config.params, node_cameras(bag, config), config.params_file, log)
    kinds = {T.IMAGE: Image, T.COMPRESSED_IMAGE: CompressedImage}
    error, answers, baseline = None, None, {}
    try:
        with ReplayClient({t: kinds[bag.topics[t].msgtype]
                           for t in (config.rgb_topic, config.thermal_topic)}) as client:
            warm, round_trip = _wait_ready(client, process, config,
                                           _warmup_pairs(bag, config), log)
            baseline = wait_for_answers(  # the warm-up pairs settled: counters before the run
                client.statuses, lambda: client.count(T.DETECTIONS),
                {'rgb': warm, 'thermal': warm}, {}, time.monotonic(),
                lambda _: config.node_timeout).final
            warm_outputs = client.count(T.DETECTIONS)
            try:
                client.play(_camera_messages(bag, config, bag.topics[config.rgb_topic].count),
                            config.rate)
            except BagReadError as err:
                error = err
            published = {camera: sum(topic == name for topic, _ in client.capture.published)
                         for camera, name in (('rgb', config.rgb_topic),
                                              ('thermal', config.thermal_topic))}
            answers = wait_for_answers(
                client.statuses, lambda: client.count(T.DETECTIONS) - warm_outputs, published,
                baseline, client.capture.finished,
                lambda v: answer_timeout(_processing_ms(v, round_trip)))
            result = client.capture
        if error is None and process is not None and process.poll() is not None:
            error = ValueError(_node_died(process, log, 'during the replay'))
    finally:
        if process is not None:
            stop_node(process)
    if answers is not None and answers.timed_out:
        print(f'univ replay: warning: {answers.unanswered} pair(s) still unanswered '
              f'{answers.timeout_s:.1f} s after the last image (the node processes a pair in '
              f'{answers.values.get("processing_ms", "?")} ms): counted as dropped, no_answer',
              file=sys.stderr)
    return result, answers, baseline, error


def replay_online(bag_path: Path, out: Path, config: OnlineConfig, force: bool = False) -> dict:
    """Replay ``bag_path`` through the node into the output folder ``out`` (atomically).

    Returns:
        The report (as in report.json).

    Raises:
        BagReadError: the bag is truncated or corrupt; ``out`` then holds the partial report.
        ValueError: missing topics, the node failing to start, an existing ``out``.
    """
    with BagInput(bag_path) as bag:
        bag.require([config.rgb_topic, config.thermal_topic])
        if config.node == 'start':
            node_cameras(bag, config)  # refused before any output exists
        with output_dir(out, force) as staging:
            staging.mkdir()
            result, answers, baseline, error = capture(bag, config, staging / 'node.log')
            partner, misses = bag_pairs(bag, (config.rgb_topic, config.thermal_topic),
                                        config.mode, float(config.params.get('sync_slop', 0)))
            outputs = {T.DETECTIONS: by_stamp(result.outputs.get(T.DETECTIONS, []),
                                              T.DETECTION_ARRAY),
                       T.SEGMENTATION: by_stamp(result.outputs.get(T.SEGMENTATION, []),
                                                T.IMAGE)}
            seg, det, palette = model_classes(config.params.get('model', ''))
            classes = result.detection_classes or det  # the node's own LabelInfo first
            scorer = Scorer(classes, seg)
            reference = config.thermal_topic if config.mode == 'thermal' else config.rgb_topic
            with BagOutput(staging / 'bag', config.storage) as out_bag:
                picks = spread(config.overlays, len(outputs[T.DETECTIONS]))
                writer = OutputWriter(out_bag, palette, seg, staging / 'overlays', picks)
                second_pass(bag, reference, config.mode, writer, scorer, outputs, partner,
                            classes)
            truth = {t: bag.topics[t].count for t in GT_TOPICS if t in bag.topics}
            report, latencies = online_report(bag_path, config, result, answers, baseline,
                                              error, partner, misses, scorer.results(), truth)
            report = write_report(staging, report, latencies, writer.overlays)
    if isinstance(error, BagReadError):
        raise BagReadError(error.path, error.messages_read, error.last_stamp_ns,
                           f'{error.detail}; the partial report is in {out}')
    if error is not None:
        raise ValueError(f'{error}; the partial report is in {out}')
    return report
