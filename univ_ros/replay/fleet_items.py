"""A bag's replay outcome as flat arrays (a fleet unit's stored result) and back.

Everything the fleet report needs per pair is kept exactly (float32 boxes and scores as the
Predictor made them, truth boxes, per-pair latencies, mask confusion matrices), so merging the
bags gives the numbers one replay of the concatenated bags gives. Arrays only (no pickle):
``np.load(..., allow_pickle=False)`` reads them back.
"""

from collections.abc import Sequence

import numpy as np

from univ_core.inference import Detections
from univ_ros.replay.offline import ReplayOutcome
from univ_ros.replay.scoring import Scorer

SEP = '/'  # array names: det/<mode>/<field>, seg/<mode>/confusion


def _strings(values: Sequence[str]) -> np.ndarray:
    return np.asarray(list(values), dtype=np.str_)


def pack(outcome: ReplayOutcome) -> dict[str, np.ndarray]:
    """Latencies and the settled Scorer of ``outcome`` as name -> array."""
    scorer = outcome.scorer
    scorer.settle()
    arrays = {'latency_s': np.asarray(outcome.state.latencies, np.float64),
              'det_classes': _strings(scorer.det_classes or []),
              'seg_classes': _strings(scorer.seg_classes or []),
              'scored': np.int64(scorer.scored),
              'unmatched_truth': np.int64(scorer.unmatched_truth)}
    for mode, (predictions, targets) in scorer.det_items.items():
        name = f'det{SEP}{mode}{SEP}'
        arrays[name + 'pred_counts'] = np.asarray([len(d.scores) for d in predictions], np.int64)
        arrays[name + 'pred_boxes'] = np.concatenate(
            [d.boxes for d in predictions] or [np.zeros((0, 4))]).astype(np.float32)
        arrays[name + 'pred_scores'] = np.concatenate(
            [d.scores for d in predictions] or [np.zeros(0)]).astype(np.float32)
        arrays[name + 'pred_ids'] = np.concatenate(
            [d.class_ids for d in predictions] or [np.zeros(0)]).astype(np.int64)
        arrays[name + 'pred_names'] = _strings([n for d in predictions for n in d.class_names])
        arrays[name + 'truth_counts'] = np.asarray([len(t['labels']) for t in targets], np.int64)
        arrays[name + 'truth_boxes'] = np.concatenate(
            [t['boxes'] for t in targets] or [np.zeros((0, 4))]).astype(np.float32)
        arrays[name + 'truth_labels'] = np.concatenate(
            [t['labels'] for t in targets] or [np.zeros(0)]).astype(np.int64)
    for mode, meter in scorer.seg_meters.items():
        arrays[f'seg{SEP}{mode}{SEP}confusion'] = meter.confusion
    return arrays


def _split(array: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """``array`` cut into consecutive pieces of ``counts`` rows."""
    return np.split(array, np.cumsum(counts)[:-1]) if len(counts) else []


def _modes(arrays: dict[str, np.ndarray], kind: str) -> list[str]:
    return list(dict.fromkeys(n.split(SEP)[1] for n in arrays if n.startswith(kind + SEP)))


def unpack(arrays: dict[str, np.ndarray]) -> Scorer:
    """The settled Scorer that :func:`pack` stored."""
    from univ_core.eval.metrics import SegmentationMeter

    arrays = {name: np.array(value) for name, value in arrays.items()}  # writable copies
    seg_classes = [str(n) for n in arrays['seg_classes']] or None
    scorer = Scorer([str(n) for n in arrays['det_classes']], seg_classes)
    scorer.scored, scorer.unmatched_truth = int(arrays['scored']), int(arrays['unmatched_truth'])
    for mode in _modes(arrays, 'det'):
        prefix = f'det{SEP}{mode}{SEP}'
        get = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        pred_counts = get['pred_counts']
        names = [str(n) for n in get['pred_names']]
        starts = np.concatenate([[0], np.cumsum(pred_counts)]).astype(int)
        predictions = [Detections(b, i, s, names[lo:hi]) for b, i, s, lo, hi in zip(
            _split(get['pred_boxes'], pred_counts), _split(get['pred_ids'], pred_counts),
            _split(get['pred_scores'], pred_counts), starts[:-1], starts[1:], strict=True)]
        targets = [{'boxes': b, 'labels': labels} for b, labels in zip(
            _split(get['truth_boxes'], get['truth_counts']),
            _split(get['truth_labels'], get['truth_counts']), strict=True)]
        scorer.det_items[mode] = (predictions, targets)
    for mode in _modes(arrays, 'seg'):
        meter = SegmentationMeter(seg_classes or [])
        meter.confusion = arrays[f'seg{SEP}{mode}{SEP}confusion'].astype(np.int64)
        scorer.seg_meters[mode] = meter
    return scorer


def merged_scores(parts: Sequence[dict[str, np.ndarray]]) -> dict:
    """The scores (as :meth:`Scorer.results`) of every pair of the packed bags together."""
    return Scorer.merged([unpack(arrays) for arrays in parts]).results()


def merged_latencies(parts: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    """Every pair's latency, seconds, over the packed bags (for percentiles and the plot)."""
    return np.concatenate([p['latency_s'] for p in parts] or [np.zeros(0)])
