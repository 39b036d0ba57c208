"""Online replay: the bag published through rclpy into the real node, outputs captured.

Measures what a vehicle would see: end-to-end latency (output arrival minus publication of the
source image), throughput, pairs the node dropped (the synchronised pairs of the bag with no
output), and sync misses. Before the timed run one pair, stamped 5 s before the bag, is sent
until the node answers (model loaded, kernels warm); its output is not counted.

The output bag and the scores are built afterwards, in a second pass over the bag, exactly as
the offline replay builds them, from the node's outputs instead of the Predictor's.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from tqdm import tqdm

from univ_ros.conversions import image_to_numpy, rgb_from_msg, stamp_seconds, thermal_from_msg
from univ_ros.replay import topics as T
from univ_ros.replay.bagio import (
    BagInput,
    BagOutput,
    BagReadError,
    deserialize,
    output_dir,
    stamp_ns,
    typestore,
)
from univ_ros.replay.outputs import OutputWriter, spread
from univ_ros.replay.report import latency_stats, write_report
from univ_ros.replay.scoring import Scorer, boxes_from_msg
from univ_ros.sync import DEFAULT_SLOP, ApproximateTimeSync

WARMUP_SHIFT_NS = 5 * 10**9  # the warm-up pair is stamped this long before the bag
GT_TOPICS = (T.GT_RGB_DETECTIONS, T.GT_THERMAL_DETECTIONS, T.GT_SEGMENTATION)


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
    drain_s: float = 3.0  # after the last publication, wait until this long without outputs

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
            header = deserialize(raw, T.IMAGE).header
            bar.update(topic == config.rgb_topic)
            yield topic, timestamp, stamp_ns(header), raw
    finally:
        bar.close()


def _warmup_pair(bag: BagInput, config: OnlineConfig) -> dict[str, bytes]:
    """The bag's first image of each camera, restamped WARMUP_SHIFT_NS earlier."""
    firsts: dict[str, bytes] = {}
    for topic, _, raw in bag.messages([config.rgb_topic, config.thermal_topic]):
        if topic not in firsts:
            msg = deserialize(raw, T.IMAGE)
            shifted = stamp_ns(msg.header) - WARMUP_SHIFT_NS
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(shifted, 10**9)
            firsts[topic] = bytes(typestore().serialize_cdr(msg, T.IMAGE))
        if len(firsts) == 2:
            break
    return firsts


def _node_died(process: Any, log: Path, when: str) -> str:
    """'univ_perception exited ...' with the end of its log."""
    tail = log.read_text(errors='replace').strip().splitlines()[-3:]
    return (f'univ_perception exited with code {process.returncode} {when}; its log ({log}) '
            f'ends: {" | ".join(tail)}')


def _wait_ready(client: Any, process: Any, config: OnlineConfig, warmup: dict,
                log: Path) -> None:
    """Until the node answers the warm-up pair; ValueError when it dies or times out."""
    deadline = time.monotonic() + config.node_timeout
    while not client.outputs_of(T.DETECTIONS):
        if process is not None and process.poll() is not None:
            raise ValueError(_node_died(process, log, 'before answering'))
        if time.monotonic() > deadline:
            raise ValueError(f'no output from univ_perception on {T.DETECTIONS} within '
                             f'{config.node_timeout:.0f} s (is it running, with the camera '
                             f'topics {config.rgb_topic} and {config.thermal_topic}?)')
        if client.connected():
            for topic in (config.rgb_topic, config.thermal_topic):
                client.publish(topic, warmup[topic])
        time.sleep(0.2)


def _drain(client: Any, config: OnlineConfig, expected: int) -> None:
    """Wait for late outputs: until ``expected`` arrived or ``drain_s`` passed without any."""
    last_count, last_change = -1, time.monotonic()
    while time.monotonic() - last_change < config.drain_s:
        count = len(client.outputs_of(T.DETECTIONS))
        if count != last_count:
            last_count, last_change = count, time.monotonic()
        if count >= expected + 1:  # + the warm-up answer
            return
        time.sleep(0.05)


def capture(bag: BagInput, config: OnlineConfig, log: Path) -> tuple[Any, ValueError | None]:
    """Start (or find) the node, warm it up, publish the bag, collect the outputs.

    Returns:
        What came back, and the error that cut the replay short (a damaged bag, the node
        dying) or None.
    """
    from univ_ros.replay.publisher import ReplayClient, start_node, stop_node

    process = None
    if config.node == 'start':
        process = start_node(config.params, config.rgb_topic, config.thermal_topic,
                             config.params_file, log)
    error = None
    try:
        with ReplayClient([config.rgb_topic, config.thermal_topic]) as client:
            _wait_ready(client, process, config, _warmup_pair(bag, config), log)
            total = bag.topics[config.rgb_topic].count
            try:
                client.play(_camera_messages(bag, config, total), config.rate)
            except BagReadError as err:
                error = err
            _drain(client, config, total)
            result = client.capture
        if error is None and process is not None and process.poll() is not None:
            error = ValueError(_node_died(process, log, 'during the replay'))
    finally:
        if process is not None:
            stop_node(process)
    return result, error


def _by_stamp(raws: list[tuple[float, bytes]], msgtype: str) -> dict[int, tuple[float, Any]]:
    """Header stamp ns -> (arrival s, message), first arrival kept."""
    out: dict[int, tuple[float, Any]] = {}
    for arrival, raw in raws:
        msg = deserialize(raw, msgtype)
        out.setdefault(stamp_ns(msg.header), (arrival, msg))
    return out


def _pairs(bag: BagInput, config: OnlineConfig) -> tuple[dict[int, tuple[int, int]], int]:
    """The node's pairing re-run on the bag.

    Returns:
        reference image stamp -> (RGB stamp, thermal stamp) of its pair (ns), and the sync
        misses. The reference is the thermal image in thermal mode, else the RGB image.
    """
    sync = ApproximateTimeSync(float(config.params.get('sync_slop', DEFAULT_SLOP)))
    streams = {config.rgb_topic: 'rgb', config.thermal_topic: 'thermal'}
    partner: dict[int, tuple[int, int]] = {}
    try:
        for topic, _, raw in bag.messages(list(streams)):
            header = deserialize(raw, T.IMAGE).header
            pair = sync.add(streams[topic], stamp_seconds(header), stamp_ns(header))
            if pair is not None:
                key = pair.thermal if config.mode == 'thermal' else pair.rgb
                partner[key] = (pair.rgb, pair.thermal)
    except BagReadError:
        pass  # the capture already recorded the damage
    return partner, sync.stats().misses


def _node_values(diagnostics: list[bytes]) -> dict:
    """Key -> value of the node's last pipeline DiagnosticStatus ({} when none arrived)."""
    for raw in reversed(diagnostics):
        for status in deserialize(raw, 'diagnostic_msgs/msg/DiagnosticArray').status:
            if 'univ_perception' in status.name:
                return {kv.key: kv.value for kv in status.values}
    return {}


def _second_pass(bag: BagInput, config: OnlineConfig, writer: OutputWriter, scorer: Scorer,
                 outputs: dict, partner: dict[int, tuple[int, int]]) -> None:
    """Copy the bag into the output bag, adding each received output after its source image."""
    reference = config.thermal_topic if config.mode == 'thermal' else config.rgb_topic
    detections, masks = outputs[T.DETECTIONS], outputs[T.SEGMENTATION]
    try:
        for topic, timestamp, raw in bag.messages(list(bag.topics)):
            msgtype = bag.topics[topic].msgtype
            writer.copy(topic, msgtype, timestamp, raw)
            if topic in GT_TOPICS:
                scorer.add_truth(topic, deserialize(raw, msgtype))
            elif topic == reference:
                msg = deserialize(raw, msgtype)
                stamp = stamp_ns(msg.header)
                if stamp in detections and stamp in partner:
                    _add_output(msg, stamp, detections[stamp][1], masks.get(stamp), writer,
                                scorer, partner, config.mode)
            scorer.settle(timestamp)
    except BagReadError:
        pass  # reported from the capture


def _add_output(source: Any, stamp: int, det_msg: Any, mask_entry: Any, writer: OutputWriter,
                scorer: Scorer, partner: dict[int, tuple[int, int]], mode: str) -> None:
    boxes, names, scores = boxes_from_msg(det_msg)
    detections = SimpleNamespace(boxes=boxes, scores=scores, class_names=names)
    mask = None if mask_entry is None else image_to_numpy(mask_entry[1])
    decode = thermal_from_msg if mode == 'thermal' else rgb_from_msg
    writer.write(det_msg.header, decode(source), mask, detections)
    scorer.add_predictions(*partner[stamp],
                           {mode: SimpleNamespace(mask=mask, detections=detections)})


def online_report(bag_path: Path, config: OnlineConfig, capture_: Any, error: Any,
                  partner: dict, misses: int, scores: dict) -> tuple[dict, list]:
    """The report's numbers and the latencies (seconds) of the outputs that arrived."""
    reference = config.thermal_topic if config.mode == 'thermal' else config.rgb_topic
    arrivals = _by_stamp(capture_.outputs.get(T.DETECTIONS, []), T.DETECTION_ARRAY)
    received = {s: a for s, (a, _) in arrivals.items() if s in partner}
    latencies = [arrival - capture_.published[(reference, stamp)]
                 for stamp, arrival in sorted(received.items())
                 if (reference, stamp) in capture_.published]
    span = (max(received.values()) - capture_.started) if received else 0.0
    synchronised = len(partner)
    node = _node_values(capture_.diagnostics)
    return {
        'kind': 'online', 'partial': error is not None, 'error': str(error) if error else None,
        'bag': str(bag_path), 'model': str(config.params.get('model', '')), 'mode': config.mode,
        'rate': config.rate, 'topics': {'rgb': config.rgb_topic,
                                        'thermal': config.thermal_topic},
        'pairs': {'synchronised': synchronised, 'processed': len(received),
                  'dropped': synchronised - len(received),
                  'sync_misses': _int(node.get('sync_misses'), misses),
                  'sync_misses_in_bag': misses, 'bad_inputs': _int(node.get('bad_inputs'), 0),
                  'first_bad_input': None},
        'latency_definition': 'output arrival - source image publication',
        'latency_ms': latency_stats(latencies),
        'throughput_hz': len(received) / span if span > 0 else None,
        'drop_rate': (synchronised - len(received)) / synchronised if synchronised else None,
        'wall_s': capture_.finished - capture_.started,
        'node': node, 'scores': scores,
    }, latencies


def _int(text: str | None, default: int) -> int:
    """A diagnostic value as int, ``default`` when missing or not a number."""
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


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
        with output_dir(out, force) as staging:
            staging.mkdir()
            result, error = capture(bag, config, staging / 'node.log')
            partner, misses = _pairs(bag, config)
            outputs = {T.DETECTIONS: _by_stamp(result.outputs.get(T.DETECTIONS, []),
                                               T.DETECTION_ARRAY),
                       T.SEGMENTATION: _by_stamp(result.outputs.get(T.SEGMENTATION, []),
                                                 T.IMAGE)}
            seg, det, palette = model_classes(config.params.get('model', ''))
            scorer = Scorer(det, seg)
            with BagOutput(staging / 'bag', config.storage) as out_bag:
                picks = spread(config.overlays, len(outputs[T.DETECTIONS]))
                writer = OutputWriter(out_bag, palette, seg, staging / 'overlays', picks)
                _second_pass(bag, config, writer, scorer, outputs, partner)
            report, latencies = online_report(bag_path, config, result, error, partner,
                                              misses, scorer.results())
            report = write_report(staging, report, latencies, writer.overlays)
    if isinstance(error, BagReadError):
        raise BagReadError(error.path, error.messages_read, error.last_stamp_ns,
                           f'{error.detail}; the partial report is in {out}')
    if error is not None:
        raise ValueError(f'{error}; the partial report is in {out}')
    return report
