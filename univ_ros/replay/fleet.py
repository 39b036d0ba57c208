"""Fleet replay: many bags through offline replay on Ray workers, one merged report.

Each bag is one unit (:mod:`univ_core.fleet`): a worker (a Ray actor holding one Predictor)
replays it exactly as ``univ replay BAG`` does into ``OUT/bags/<key>/`` (output bag, the bag's
own report, overlays) and returns the bag's per-pair detections, truths and latencies; the
driver stores them in ``OUT/results/`` and merges all bags into ``OUT/report.json`` /
``report.md`` / plots: COCO mAP over every pair of every bag together, latency percentiles over
every pair, one row per bag, one error row per bag that failed.
"""

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from univ_core.fleet.inputs import expand, fingerprint, input_key, is_bag
from univ_core.fleet.job import Unit, UnitResult
from univ_ros.replay.bagio import BagInput
from univ_ros.replay.offline import ReplayConfig, replay_bag
from univ_ros.replay.report import fleet_numbers, write_fleet_report

LATENCY_DEFINITION = 'decode + predict per pair'  # as offline_report

WHAT = 'rosbag2 bags (folders with metadata.yaml, or .mcap / .db3 files)'
BAGS = 'bags'  # OUT/bags/<key>/: one replay output folder per input bag


def model_sha256(model: str) -> str | None:
    """sha256 of the model file the workers load ('' = the default model); None if missing."""
    from univ_core.models.model_file import default_model_path
    from univ_core.models.weights import file_sha256

    path = Path(model) if model else default_model_path()
    return file_sha256(path) if path.is_file() else None


def frame_count(path: Path, topic: str) -> int:
    """RGB frames in the bag's index (0 when it cannot be read: the worker names the error)."""
    try:
        with BagInput(path) as bag:
            info = bag.topics.get(topic)
            return info.count if info else 0
    except (OSError, ValueError):
        return 0


@dataclass
class ReplayJob:
    """Offline replay of many bags (a :class:`univ_core.fleet.job.FleetJob`).

    Args:
        predictor_factory: builds the Predictor, in each worker (picklable: a module-level
            function or a functools.partial of one).
        config: the replay settings of every bag (``progress`` is ignored: one fleet bar).
        params: the settings the Predictor is built from (model file, thresholds, ...): results
            made with other params are never reused.
        model_name: the model, as named in the reports.
    """

    predictor_factory: Callable[[], Any]
    config: ReplayConfig = field(default_factory=ReplayConfig)
    params: dict = field(default_factory=dict)
    model_name: str = ''
    kind: str = 'replay'
    items_name: str = 'pair'

    def settings(self) -> dict:
        """The params, the replay config (the progress bar aside) and the model file's sha256.

        The hash, not only the path: a model re-exported to the same path redoes every bag.
        """
        replay = {k: v for k, v in dataclasses.asdict(self.config).items() if k != 'progress'}
        return {'params': self.params, 'replay': replay, 'model': self.model_name,
                'model_sha256': model_sha256(str(self.params.get('model') or ''))}

    def plan(self, inputs: Sequence[str]) -> list[Unit]:
        """One unit per bag found in ``inputs`` (paths, folders, globs)."""
        return [Unit(input_key(bag), str(bag), frame_count(bag, self.config.rgb_topic),
                     fingerprint(bag)) for bag in expand(inputs, is_bag, WHAT)]

    def open_worker(self) -> 'ReplayWorker':
        """Load the Predictor (once per worker)."""
        return ReplayWorker(self, self.predictor_factory())

    def merge(self, results: Sequence[UnitResult], out: Path, summary: dict) -> dict:
        """Write the fleet report of every bag into ``out``."""
        from univ_ros.replay.fleet_items import merged_latencies, merged_scores

        parts = [r.arrays for r in results if r.status != 'error']
        read = [r.row for r in results if r.status != 'error']
        header = {'model': self.model_name, 'mode': self.config.mode,
                  'topics': {'rgb': self.config.rgb_topic, 'thermal': self.config.thermal_topic},
                  'thresholds': read[0]['thresholds'] if read else None,
                  'latency_definition': LATENCY_DEFINITION}
        latencies = merged_latencies(parts)
        report = fleet_numbers([r.row for r in results], merged_scores(parts), latencies,
                               summary, header)
        return write_fleet_report(Path(out), report, latencies)


@dataclass
class ReplayWorker:
    """A loaded Predictor replaying whole bags."""

    job: ReplayJob
    predictor: Any

    def run(self, unit: Unit, out: Path) -> UnitResult:
        """Replay one bag into ``out/bags/<key>`` (replacing a dead attempt's leftovers)."""
        from univ_ros.replay.fleet_items import pack

        config = dataclasses.replace(self.job.config, progress=False)
        target = Path(out) / BAGS / unit.key
        outcome = replay_bag(Path(unit.source), target, self.predictor, config, force=True,
                             model_name=self.job.model_name)
        report, error = outcome.report, outcome.state.error
        detection = report['scores'].get('detection') or {}
        row = {'error': str(error) if error else None, 'output': f'{BAGS}/{unit.key}',
               'images': report['images'], 'pairs': report['pairs'],
               'latency_ms': report['latency_ms'], 'throughput_hz': report['throughput_hz'],
               'bag_wall_s': report['wall_s'], 'thresholds': report.get('thresholds'),
               'map': {mode: d['map'] for mode, d in detection.items()}}
        return UnitResult(unit.key, 'partial' if error else 'ok',
                          report['pairs']['processed'], row, pack(outcome))
