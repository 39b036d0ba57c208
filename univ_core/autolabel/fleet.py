"""Fleet autolabelling: many inputs through ``univ autolabel`` on Ray workers, one summary.

Each input (a dataset folder in a native layout, or a bag) is one unit (:mod:`univ_core.fleet`):
a worker (a Ray actor holding the loaded teachers) labels it exactly as ``univ autolabel INPUT``
does, into ``OUT/<key>/``, the very layout of one input (``labels/``, ``masks/``,
``pairs.json``, ``provenance.json``, ...), so ``data.format=autolabel data.root=OUT`` trains on
a fleet's output as on a single run's. The key is the input's name (:func:`input_tag`, made
file-name safe); inputs sharing a name get :func:`~univ_core.fleet.inputs.input_key`'s path hash
too. The merge writes ``OUT/summary.json`` / ``summary.md``: totals over every input, one row
per input, the errors.
"""

import dataclasses
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from univ_core.autolabel.config import AutolabelConfig, ClassTable
from univ_core.autolabel.fleet_summary import COUNTS, fleet_summary, write_summary
from univ_core.autolabel.labeller import Labeller
from univ_core.autolabel.output import MODALITY_DIRS, input_tag
from univ_core.autolabel.sources import is_input
from univ_core.data.paired import find_pairs
from univ_core.fleet.inputs import expand, fingerprint, input_key, is_bag
from univ_core.fleet.job import Unit, UnitResult
from univ_core.fleet.store import MANIFEST, RESULTS

WHAT = ('dataset folders in a native layout (univ_core/data/paired.py) or rosbag2 bags '
        '(folders with metadata.yaml, or .mcap / .db3 files)')
SUMMARY = 'summary'  # OUT/summary.json and OUT/summary.md
RESERVED = frozenset({RESULTS, MANIFEST, f'{SUMMARY}.json', f'{SUMMARY}.md'})  # runner's names


def output_keys(paths: Sequence[Path]) -> list[str]:
    """Each input's key (its folder ``OUT/<key>``): its name as one input's run names it.

    Names made file-name safe; a name two inputs share, or one of the fleet's own files, gets
    the input's path hash (``day1-3f2a9c01``) so that no two inputs write one folder.
    """
    names = [re.sub(r'[^A-Za-z0-9._-]+', '_', input_tag(p)) for p in paths]
    shared = Counter(names)
    return [input_key(p) if shared[n] > 1 or n in RESERVED else n
            for p, n in zip(paths, names, strict=True)]


def pair_count(path: Path, layout: str, split: str | None,
               topics: tuple[str, str] | None = None) -> int:
    """Pairs of an input (a bag: its RGB frames); 0 when unreadable (the worker names why)."""
    try:
        if is_bag(path):
            from univ_ros.replay import topics as T
            from univ_ros.replay.fleet import frame_count  # optional: univ_core runs without ROS

            return frame_count(path, topics[0] if topics else T.RGB_IMAGE)
        return len(find_pairs(path, layout, split))
    except (ImportError, OSError, ValueError):
        return 0


@dataclass
class AutolabelJob:
    """``univ autolabel`` over many inputs (a :class:`univ_core.fleet.job.FleetJob`).

    Args:
        config: the labelling settings of every input.
        layout: layout of the dataset folders ('auto': each its own).
        split: the split to label where a layout has splits (None: all).
        topics: the (RGB, thermal) camera topics of bag inputs (None: the replay's defaults).
    """

    config: AutolabelConfig = field(default_factory=AutolabelConfig)
    layout: str = 'auto'
    split: str | None = None
    topics: tuple[str, str] | None = None
    kind: str = 'autolabel'
    items_name: str = 'pair'

    def settings(self) -> dict:
        """What decides the labels (:meth:`AutolabelConfig.label_identity`), layout, split."""
        return {**self.config.label_identity(), 'layout': self.layout, 'split': self.split,
                **({'topics': list(self.topics)} if self.topics else {})}

    def plan(self, inputs: Sequence[str]) -> list[Unit]:
        """One unit per input found in ``inputs`` (paths, folders of inputs, globs)."""
        paths = expand(inputs, is_input, WHAT)
        return [Unit(key, str(path), pair_count(path, self.layout, self.split, self.topics),
                     fingerprint(path)) for path, key in zip(paths, output_keys(paths),
                                                             strict=True)]

    def open_worker(self) -> 'AutolabelWorker':
        """Load the teachers (once per worker)."""
        from univ_core.autolabel.run import load_labeller

        config = self.config
        threads = os.environ.get('OMP_NUM_THREADS', '')
        if not config.threads and threads.isdigit():
            # Ray sets OMP_NUM_THREADS to a worker's --cpus-per-worker; onnxruntime ignores it
            # and would start a thread per core in every worker.
            config = dataclasses.replace(config, threads=int(threads))
        return AutolabelWorker(self, load_labeller(config))

    def merge(self, results: Sequence[UnitResult], out: Path, summary: dict) -> dict:
        """Write ``OUT/summary.json`` and ``summary.md`` of every input."""
        header = {'teachers': self.config.teacher_sha256(), 'layout': self.layout,
                  'split': self.split,
                  'classes': ClassTable.load(self.config.classes).det_classes}
        report = fleet_summary([r.row for r in results], summary, header)
        return write_summary(Path(out), SUMMARY, report)


@dataclass
class AutolabelWorker:
    """Loaded teachers labelling whole inputs."""

    job: AutolabelJob
    labeller: Labeller

    def run(self, unit: Unit, out: Path) -> UnitResult:
        """Label one input into ``out/<key>`` (replacing a dead attempt's leftovers).

        Its counts are sums, so the per-input numbers of the row are all the merge needs (the
        totals are exact): no per-pair arrays.
        """
        from univ_core.autolabel.run import autolabel_input

        job = self.job
        provenance = autolabel_input(unit.source, Path(out) / unit.key, self.labeller,
                                     job.layout, job.split, force=True, progress=False,
                                     topics=job.topics)
        damage = provenance['damage']  # a damaged bag: labelled up to the damage
        row = {'error': damage, 'output': unit.key, **{k: provenance[k] for k in COUNTS},
               'boxes': {m: provenance['counts'][m] for m in MODALITY_DIRS},
               'label_s': provenance['seconds']}
        return UnitResult(unit.key, 'partial' if damage else 'ok', provenance['pairs'], row)
