"""Online replay, after the capture: pairs, the output bag, scores and the report's numbers.

The bag's pairs are formed again with the node's synchroniser (so each output finds the
(RGB, thermal) stamps it was computed from), the output bag and the scores are built in a
second pass over the bag that reads the ground truth as the offline replay does, and every
synchronised pair is reported as processed or dropped with a reason.
"""

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from univ_ros.conversions import image_to_numpy, stamp_seconds
from univ_ros.predictor_defaults import predictor_default
from univ_ros.replay import topics as T
from univ_ros.replay.answers import COUNTERS, Answers, drop_reasons
from univ_ros.replay.bagio import BagInput, BagReadError, deserialize, stamp_ns
from univ_ros.replay.outputs import OutputWriter
from univ_ros.replay.report import latency_stats
from univ_ros.replay.scoring import Scorer, boxes_from_msg
from univ_ros.sync import ApproximateTimeSync

GT_TOPICS = (T.GT_RGB_DETECTIONS, T.GT_THERMAL_DETECTIONS, T.GT_SEGMENTATION)


def by_stamp(raws: list[tuple[float, bytes]], msgtype: str) -> dict[int, tuple[float, Any]]:
    """Header stamp ns -> (arrival s, message), first arrival kept."""
    out: dict[int, tuple[float, Any]] = {}
    for arrival, raw in raws:
        msg = deserialize(raw, msgtype)
        out.setdefault(stamp_ns(msg.header), (arrival, msg))
    return out


def bag_pairs(bag: BagInput, topics: tuple[str, str], mode: str,
              slop: float) -> tuple[dict[int, tuple[int, int]], int]:
    """The node's pairing re-run on the bag (``slop`` 0: auto, as the node).

    Returns:
        reference image stamp -> (RGB stamp, thermal stamp) of its pair (ns), and the sync
        misses. The reference is the thermal image in thermal mode, else the RGB image.
    """
    sync = ApproximateTimeSync(slop or None)
    streams = {topics[0]: 'rgb', topics[1]: 'thermal'}
    partner: dict[int, tuple[int, int]] = {}
    try:
        for topic, _, raw in bag.messages(list(streams)):
            header = deserialize(raw, bag.topics[topic].msgtype).header
            pair = sync.add(streams[topic], stamp_seconds(header), stamp_ns(header))
            while pair is not None:
                key = pair.thermal if mode == 'thermal' else pair.rgb
                partner[key] = (pair.rgb, pair.thermal)
                pair = sync.pop_ready()
    except BagReadError:
        pass  # the capture already recorded the damage
    return partner, sync.stats().misses


def second_pass(bag: BagInput, reference: str, mode: str, writer: OutputWriter,
                scorer: Scorer, outputs: dict, partner: dict[int, tuple[int, int]],
                class_names: list[str] | None) -> None:
    """Copy the bag into the output bag, adding each received output after its source image.

    ``reference`` is the camera topic whose header the outputs carry; ``class_names`` are the
    node's detection classes (its integer class_id values index them).
    """
    detections, masks = outputs[T.DETECTIONS], outputs[T.SEGMENTATION]
    decode = bag.decoder(reference, 'thermal' if mode == 'thermal' else 'rgb')
    try:
        for topic, timestamp, raw in bag.messages(list(bag.topics)):
            msgtype = bag.topics[topic].msgtype
            writer.copy(topic, msgtype, timestamp, raw)
            if topic in GT_TOPICS:
                scorer.add_truth(topic, deserialize(raw, msgtype))
            elif topic == reference:
                source = deserialize(raw, msgtype)
                stamp = stamp_ns(source.header)
                if stamp in detections and stamp in partner:
                    det_msg = detections[stamp][1]
                    boxes, names, scores = boxes_from_msg(det_msg, class_names)
                    dets = SimpleNamespace(boxes=boxes, scores=scores, class_names=names)
                    mask = None if stamp not in masks else image_to_numpy(masks[stamp][1])
                    writer.write(det_msg.header, decode(source), mask, dets)
                    scorer.add_predictions(*partner[stamp],
                                           {mode: SimpleNamespace(mask=mask, detections=dets)})
            scorer.settle(final=False)
    except BagReadError:
        pass  # reported from the capture


def online_report(bag_path: Path, config: Any, capture_: Any, answers: Answers | None,
                  baseline: dict, error: Any, partner: dict, misses: int, scores: dict,
                  truth: dict[str, int]) -> tuple[dict, list]:
    """The report's numbers and the latencies (seconds) of the outputs that arrived.

    ``truth``: ground-truth topic -> messages in the bag.
    """
    reference = config.thermal_topic if config.mode == 'thermal' else config.rgb_topic
    arrivals = by_stamp(capture_.outputs.get(T.DETECTIONS, []), T.DETECTION_ARRAY)
    received = {s: a for s, (a, _) in arrivals.items() if s in partner}
    latencies = [arrival - capture_.published[(reference, stamp)]
                 for stamp, arrival in sorted(received.items())
                 if (reference, stamp) in capture_.published]
    span = (max(received.values()) - capture_.started) if received else 0.0
    synchronised, processed = len(partner), len(received)
    node = answers.values if answers is not None else {}
    delta = ({k: answers.final[k] - baseline.get(k, 0) for k in COUNTERS}
             if answers is not None else {})
    reasons = (drop_reasons(synchronised, processed, baseline, answers)
               if answers is not None else {})
    threshold = float(config.params.get('score_threshold',
                                        predictor_default('score_threshold')))
    warnings = []
    if answers is not None and answers.timed_out:
        warnings.append(f'{answers.unanswered} pair(s) unanswered {answers.timeout_s:.1f} s '
                        'after the last image (counted as dropped: no_answer)')
    return {
        'kind': 'online', 'partial': error is not None, 'error': str(error) if error else None,
        'bag': str(bag_path), 'model': str(config.params.get('model', '')), 'mode': config.mode,
        'rate': config.rate, 'topics': {'rgb': config.rgb_topic,
                                        'thermal': config.thermal_topic},
        'pairs': {'synchronised': synchronised, 'processed': processed,
                  'dropped': synchronised - processed, 'dropped_by_reason': reasons,
                  'sync_misses': delta.get('sync_misses', misses),
                  'sync_misses_in_bag': misses, 'bad_inputs': delta.get('bad_inputs', 0),
                  'first_bad_input': None},
        'latency_definition': 'output arrival - source image publication (one clock: transport '
                              'to and from the node, queueing, inference)',
        'latency_ms': latency_stats(latencies),
        'node_latency_ms': _float(node.get('latency_ms')),
        'node_latency_definition': "the node's mean from receiving a pair's newest image to "
                                   'its outputs published (its diagnostics, last 30 pairs)',
        'throughput_hz': processed / span if span > 0 else None,
        'drop_rate': (synchronised - processed) / synchronised if synchronised else None,
        'wall_s': capture_.finished - capture_.started,
        'answer_wait': None if answers is None else {'timeout_s': answers.timeout_s,
                                                     'timed_out': answers.timed_out},
        'ground_truth': truth,
        'thresholds': {'deployment': threshold, 'map_from': threshold},
        'warnings': warnings,
        'node': node, 'scores': scores,
    }, latencies


def _float(text: str | None) -> float | None:
    """A diagnostic value as float, None when missing or not a number."""
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
