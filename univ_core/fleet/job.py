"""What a fleet job is: inputs split into units, a worker that runs one unit, a merge.

A job kind (bag replay, autolabelling) implements :class:`FleetJob`; :func:`run_fleet` does the
rest (skipping finished units, running the others in-process or on Ray actors, storing each
result atomically, merging). The job object is pickled to every worker, so it holds settings
only; :meth:`FleetJob.open_worker` loads the model inside the worker, once.

A new kind (see :class:`univ_ros.replay.fleet.ReplayJob`) needs: ``plan`` (usually
:func:`univ_core.fleet.inputs.expand` + ``input_key`` + ``fingerprint``), a worker whose ``run``
writes the unit's outputs under ``out/<its folder>/<key>`` atomically (staging named
``.<name>.*.tmp`` beside it, which the runner sweeps after a killed attempt) and returns the
per-item numbers merging needs as arrays, and ``merge``. The command adds
:func:`univ_core.fleet.cli.add_fleet_arguments` and calls ``run_fleet``.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

STATUSES = ('ok', 'partial', 'error')  # partial: a damaged input, read up to the damage
FINAL = ('ok', 'partial')  # results a re-run keeps (an error is tried again)


@dataclass(frozen=True)
class Unit:
    """One piece of work: an input (a bag, a folder of pairs) processed by one worker call."""

    key: str  # unique, file-name safe: names results/<key>.json and the unit's outputs
    source: str  # the input path, as found
    size: int  # work estimate in items (pairs), for the progress bar and the largest-first order
    fingerprint: str  # changes when the input's files change (a stale result is redone)


@dataclass
class UnitResult:
    """What one unit produced.

    ``row`` and ``arrays`` are all that merging sees, so the merge over many results equals one
    pass over the concatenated inputs as long as ``arrays`` keeps every per-item number the
    fleet metrics need (not per-unit summaries).
    """

    key: str  # Unit.key
    status: str  # one of STATUSES
    items: int  # items processed (pairs); 0 on error
    row: dict  # JSON-able: this unit's row in the fleet report ('error' set unless ok)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # flat name -> numeric/str array

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f'UnitResult.status: expected one of {STATUSES}, '
                             f'got {self.status!r}')


class FleetWorker(Protocol):
    """Runs units inside one worker process; holds the loaded model."""

    def run(self, unit: Unit, out: Path) -> UnitResult:
        """Process ``unit``; write its outputs under ``out`` atomically.

        Leftovers of an attempt that died are replaced. May raise: the runner turns an
        exception into the unit's error row.
        """


class FleetJob(Protocol):
    """A job kind: picklable settings, how to plan units, open a worker and merge results."""

    kind: str  # 'replay' | 'autolabel': names the job in fleet.json and the report

    def settings(self) -> dict:
        """JSON-able settings; results made with other settings are never reused."""

    def plan(self, inputs: Sequence[str]) -> list[Unit]:
        """Units of the given paths / folders / globs, in input order.

        Raises:
            FileNotFoundError: an input matches nothing (the message names it).
        """

    def open_worker(self) -> FleetWorker:
        """Load the model (in the worker process, once)."""

    def merge(self, results: Sequence[UnitResult], out: Path, summary: dict) -> dict:
        """Write the fleet report into ``out``; return it.

        ``results``: every unit's result in plan order; ``summary``: the runner's counts,
        workers and wall time.
        """
