"""Offline replay: a bag through the node's synchroniser and the Predictor, as fast as it runs.

The images are paired by :class:`univ_ros.sync.ApproximateTimeSync` (the node's pairing, fed
in bag order) and decoded by the node's conversions, and every pair runs through the same
:class:`univ_core.inference.Predictor` call as in the node, so the outputs equal the node's for
the pairs it would process. Deterministic: same bag, model and settings give the same outputs.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from univ_ros.conversions import ImageConversionError, stamp_seconds
from univ_ros.replay import topics as T
from univ_ros.replay.bagio import (
    BagInput,
    BagOutput,
    BagReadError,
    deserialize,
    output_dir,
    stamp_ns,
)
from univ_ros.replay.outputs import OutputWriter, spread
from univ_ros.replay.report import latency_stats, write_report
from univ_ros.replay.scoring import Scorer
from univ_ros.sync import ApproximateTimeSync, Pair

MODES = ('fused', 'rgb', 'thermal')
GT_TOPICS = (T.GT_RGB_DETECTIONS, T.GT_THERMAL_DETECTIONS, T.GT_SEGMENTATION)


@dataclass
class ReplayConfig:
    """What to replay and how."""

    rgb_topic: str = T.RGB_IMAGE  # RGB camera topic in the bag (Image or CompressedImage)
    thermal_topic: str = T.THERMAL_IMAGE  # thermal camera topic in the bag
    mode: str = 'fused'  # the mode whose outputs go into the output bag
    score_all_modes: bool = True  # with ground truth: also score rgb and thermal (and fused)
    # sync window, seconds; 0 or None: auto, half the faster camera's frame period (as the
    # node's sync_slop 0)
    slop: float | None = None
    storage: str = 'mcap'  # output bag storage: mcap | sqlite3
    overlays: int = 4  # overlay PNGs saved, spread over the bag
    progress: bool = True  # tqdm bar

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f'--mode: expected one of {MODES}, got {self.mode!r}')
        self.slop = self.slop or None  # 0: auto
        if self.slop is not None and not self.slop > 0:
            raise ValueError(f'--slop must be > 0 seconds (or 0: auto), got {self.slop}')


@dataclass
class RunState:
    """What one replay saw and measured."""

    latencies: list[float] = field(default_factory=list)  # seconds per processed pair
    processed: int = 0  # pairs that produced outputs
    bad_inputs: int = 0  # pairs skipped (undecodable image, size mismatch)
    first_bad_input: str = ''  # why the first one was skipped
    images: dict = field(default_factory=lambda: {'rgb': 0, 'thermal': 0})
    error: BagReadError | None = None  # the bag was damaged: outputs are partial
    wall_s: float = 0.0  # replay duration


def score_modes(config: ReplayConfig, has_truth: bool) -> tuple[str, ...]:
    """The modes each pair runs in: the output mode first, then the others when scoring."""
    if not (has_truth and config.score_all_modes):
        return (config.mode,)
    return (config.mode, *[m for m in MODES if m != config.mode])


def _run_pair(pair: Pair, predictor: Any, modes: tuple[str, ...], writer: OutputWriter,
              scorer: Scorer, state: RunState, scoring: bool, decode: dict) -> None:
    """Decode and predict one pair in every mode; write the output mode's results.

    ``decode``: camera ('rgb' | 'thermal') -> the node's decoder for the bag's topic type.

    With ground truth (``scoring``) the Predictor keeps every box down to its eval threshold
    (mAP integrates the whole PR curve); the output bag gets the deployment cut of them,
    exactly what the node publishes.
    """
    start = time.perf_counter()
    try:
        rgb, thermal = decode['rgb'](pair.rgb), decode['thermal'](pair.thermal)
        if len(modes) > 1:  # every scored mode from one forward of both images
            predictions = predictor.predict_modes(rgb, thermal, modes, scoring=scoring)
        else:
            predictions = {modes[0]: predictor.predict(rgb, thermal, modes[0], scoring=scoring)}
    except (ImageConversionError, ValueError) as err:
        state.bad_inputs += 1
        state.first_bad_input = state.first_bad_input or str(err)
        return
    state.latencies.append(time.perf_counter() - start)
    main = predictions[modes[0]]
    reference, image = (pair.thermal, thermal) if main.mode == 'thermal' else (pair.rgb, rgb)
    writer.write(reference.header, image, main.mask,
                 main.detections.above(predictor.config.score_threshold))
    scorer.add_predictions(stamp_ns(pair.rgb.header), stamp_ns(pair.thermal.header),
                           predictions)
    state.processed += 1


def _stream(bag: BagInput, predictor: Any, config: ReplayConfig, writer: OutputWriter,
            scorer: Scorer, state: RunState) -> ApproximateTimeSync:
    """Read the whole bag (every topic is copied), pairing and predicting as images come."""
    sync = ApproximateTimeSync(config.slop)
    streams = {config.rgb_topic: 'rgb', config.thermal_topic: 'thermal'}
    has_truth = any(t in bag.topics for t in GT_TOPICS)
    modes = score_modes(config, has_truth)
    decode = bag.pair_decoders(config.rgb_topic, config.thermal_topic)
    bar = tqdm(total=bag.topics[config.rgb_topic].count, unit='frame', desc='replay',
               disable=not config.progress)
    try:
        for topic, timestamp, raw in bag.messages(list(bag.topics)):
            msgtype = bag.topics[topic].msgtype
            writer.copy(topic, msgtype, timestamp, raw)
            if topic in streams:
                msg = deserialize(raw, msgtype)
                state.images[streams[topic]] += 1
                bar.update(topic == config.rgb_topic)
                pair = sync.add(streams[topic], stamp_seconds(msg.header), msg)
                if pair is not None:
                    _run_pair(pair, predictor, modes, writer, scorer, state, has_truth, decode)
            elif topic in GT_TOPICS:
                scorer.add_truth(topic, deserialize(raw, msgtype))
            scorer.settle(final=False)
    except BagReadError as err:
        state.error = err  # the pairs read before the damage still count
    finally:
        bar.close()
    for pair in sync.finish():
        _run_pair(pair, predictor, modes, writer, scorer, state, has_truth, decode)
    return sync


def offline_report(bag_path: Path, model_name: str, config: ReplayConfig, state: RunState,
                   synchronised: int, sync_misses: int, scores: dict,
                   thresholds: dict | None = None) -> dict:
    """The report's numbers (before :func:`univ_ros.replay.report.write_report` adds files).

    ``thresholds``: {'deployment': score cut of the output bag, 'map_from': lowest score of the
    detections mAP is computed from}.
    """
    error = state.error
    return {
        'kind': 'offline', 'partial': error is not None, 'error': str(error) if error else None,
        'bag': str(bag_path), 'model': model_name, 'mode': config.mode,
        'topics': {'rgb': config.rgb_topic, 'thermal': config.thermal_topic},
        'images': state.images,
        'pairs': {'synchronised': synchronised, 'processed': state.processed,
                  'dropped': 0, 'sync_misses': sync_misses, 'bad_inputs': state.bad_inputs,
                  'first_bad_input': state.first_bad_input or None},
        'latency_definition': 'decode + predict per pair (every scored mode: one forward)',
        'latency_ms': latency_stats(state.latencies),
        'throughput_hz': state.processed / state.wall_s if state.wall_s > 0 else None,
        'drop_rate': 0.0, 'wall_s': state.wall_s, 'scores': scores,
        'thresholds': thresholds,
    }


@dataclass
class ReplayOutcome:
    """A finished replay: the report and what it was computed from (merged by fleet runs)."""

    report: dict  # as in report.json
    scorer: Scorer  # every scored pair's detections, truths and mask confusion (settled)
    state: RunState  # per-pair latencies and counts; ``error`` set for a damaged bag


def replay_offline(bag_path: Path, out: Path, predictor: Any, config: ReplayConfig,
                   force: bool = False, model_name: str = '') -> dict:
    """Replay ``bag_path`` into the output folder ``out`` (written atomically).

    ``out`` receives ``bag/`` (rosbag2: inputs + outputs), ``report.json``, ``report.md``,
    ``overlays/*.png`` and plots.

    Returns:
        The report (as in report.json).

    Raises:
        BagReadError: the bag is truncated or corrupt; ``out`` then holds the partial report.
        ValueError: missing topics (the message lists the bag's topics), existing ``out``.
    """
    outcome = replay_bag(bag_path, out, predictor, config, force, model_name)
    if outcome.state.error is not None:
        err = outcome.state.error
        raise BagReadError(err.path, err.messages_read, err.last_stamp_ns,
                           f'{err.detail}; the partial report is in {out}')
    return outcome.report


def replay_bag(bag_path: Path, out: Path, predictor: Any, config: ReplayConfig,
               force: bool = False, model_name: str = '') -> ReplayOutcome:
    """:func:`replay_offline`, returning the report with the Scorer and per-pair state.

    A damaged bag does not raise: its partial outcome comes back with ``state.error`` set.
    """
    state = RunState()
    with BagInput(bag_path) as bag:
        bag.require([config.rgb_topic, config.thermal_topic])
        seg = predictor.seg_classes
        scorer = Scorer(list(predictor.det_classes or []), list(seg) if seg else None)
        with output_dir(out, force) as staging:
            staging.mkdir()
            start = time.perf_counter()
            with BagOutput(staging / 'bag', config.storage) as out_bag:
                # pairs are at most the slower camera's images (a pair index picks an overlay)
                picks = spread(config.overlays, min(bag.topics[t].count for t in
                                                    (config.rgb_topic, config.thermal_topic)))
                writer = OutputWriter(out_bag, predictor.palette, seg, staging / 'overlays',
                                      picks)
                sync = _stream(bag, predictor, config, writer, scorer, state)
            state.wall_s = time.perf_counter() - start
            cfg = predictor.config
            report = offline_report(bag_path, model_name, config, state, sync.stats().pairs,
                                    sync.stats().misses, scorer.results(),
                                    {'deployment': cfg.score_threshold,
                                     'map_from': min(cfg.score_threshold,
                                                     cfg.eval_score_threshold)})
            report['published'] = {'messages': writer.published, 'boxes': writer.boxes}
            # what ran ('auto' resolves per CPU: bf16 / int8 scores differ a little from fp32)
            report['precision'] = getattr(predictor, 'precision', None)
            report = write_report(staging, report, state.latencies, writer.overlays)
    return ReplayOutcome(report, scorer, state)
