"""Running units: in this process, or on Ray actors (one model per actor, Ray's retries).

Ray does the placement, the process supervision and the retries: every worker is an actor
created with ``max_restarts`` / ``max_task_retries``, so when its process dies mid-unit Ray
starts a new one (the model is loaded again) and re-runs the unit from scratch. Retries are
counted per unit (Ray's task retries); the actor's restarts are budgeted so that every unit
can use all of its retries (a worker dying once on each of many inputs goes on). A unit's result
reaches the driver only when the unit is finished, and the driver stores it once per key, so a
retried unit is never counted twice. The loop below only hands the next unit to an idle actor
(largest units first, which keeps the actors evenly busy).
"""

import os
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from univ_core.fleet.job import FleetJob, FleetWorker, Unit, UnitResult

OnResult = Callable[[Unit, UnitResult], None]


@dataclass
class RayConfig:
    """Where and how big the Ray workers are."""

    address: str | None = None  # None: a local runtime; 'auto' | 'ray://HOST:PORT': join one
    workers: int | None = None  # actors (each loads the model once); None: as many as fit
    cpus_per_worker: float = 1.0  # Ray CPU request per actor (sets its torch threads)
    gpus_per_worker: float = 0.0  # Ray GPU request per actor (0.5: two actors share a GPU)
    retries: int = 2  # re-runs of a unit whose worker died, per unit (the worker restarts)

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError(f'--workers must be >= 1, got {self.workers}')
        if self.cpus_per_worker < 0 or self.gpus_per_worker < 0 or self.retries < 0:
            raise ValueError('--cpus-per-worker, --gpus-per-worker and --retries must be >= 0')


def worker_name() -> str:
    """host:pid of this process (a restarted actor gets a new pid)."""
    return f'{socket.gethostname()}:{os.getpid()}'


def error_result(unit: Unit, message: str, worker: str = '') -> UnitResult:
    """The error row of a unit that produced nothing."""
    return UnitResult(unit.key, 'error', 0, {'key': unit.key, 'input': unit.source,
                                             'status': 'error', 'error': message,
                                             'worker': worker, 'wall_s': 0.0})


def run_unit(worker: FleetWorker, unit: Unit, out: Path, name: str) -> UnitResult:
    """One unit through ``worker``; any exception becomes the unit's error row."""
    start = time.perf_counter()
    try:
        result = worker.run(unit, out)
    except Exception as err:  # noqa: BLE001 - one bad input must not stop the fleet
        if os.environ.get('UNIV_DEBUG'):
            traceback.print_exc()
        # Input errors name the input already; anything else is named by its type.
        known = isinstance(err, (ValueError, FileNotFoundError))
        return error_result(unit, str(err) if known else f'{type(err).__name__}: {err}', name)
    result.row = {'key': unit.key, 'input': unit.source, 'status': result.status,
                  **result.row, 'worker': name, 'wall_s': time.perf_counter() - start}
    return result


def run_in_process(job: FleetJob, units: Sequence[Unit], out: Path,
                   on_result: OnResult) -> None:
    """Every unit here, one after the other, with one loaded model."""
    if not units:
        return
    worker, name = job.open_worker(), worker_name()
    for unit in units:
        on_result(unit, run_unit(worker, unit, out, name))


class FleetActor:
    """A Ray actor: loads the model once (again after a restart), then runs units."""

    def __init__(self, job: FleetJob, gpus: float) -> None:
        if not gpus:  # Ray leaves a 0-GPU worker's GPUs visible: it would crowd GPU 0 unasked
            os.environ['CUDA_VISIBLE_DEVICES'] = ''
        self.worker = job.open_worker()
        self.name = worker_name()

    def run(self, unit: Unit, out: Path) -> UnitResult:
        """One unit (see :func:`run_unit`)."""
        return run_unit(self.worker, unit, out, self.name)


def run_on_ray(job: FleetJob, units: Sequence[Unit], out: Path, config: RayConfig,
               on_result: OnResult) -> None:
    """Every unit on ``config.workers`` actors of the connected Ray runtime.

    A unit whose worker died more than ``config.retries`` times on it (or whose model did not
    load) gets an error row, and that actor takes no more units; the others go on.
    """
    import ray
    from ray.exceptions import RayActorError, RayError

    # every unit may kill the actor retries + 1 times before giving up: never short of restarts
    actor_class = ray.remote(FleetActor).options(
        num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker,
        max_restarts=(config.retries + 1) * len(units), max_task_retries=config.retries)
    # The job (settings only, small) goes inline with each actor's creation, so a restart
    # never depends on an object-store copy that may have been freed.
    actors = [actor_class.remote(job, config.gpus_per_worker)
              for _ in range(min(config.workers or 1, len(units)))]
    queue = sorted(units, key=lambda u: -u.size)  # largest first: the last units are short
    running: dict = {}  # ObjectRef -> (unit, actor)
    idle = list(actors)
    try:
        while queue or running:
            while queue and idle:
                actor, unit = idle.pop(), queue.pop(0)
                running[actor.run.remote(unit, out)] = (unit, actor)
            if not running:  # every actor is dead
                for unit in queue:
                    on_result(unit, error_result(unit, 'no Ray worker left (all died)'))
                return
            (ref,), _ = ray.wait(list(running), num_returns=1)
            unit, actor = running.pop(ref)
            try:
                result = ray.get(ref)
                idle.append(actor)
            except RayActorError as err:
                result = error_result(unit, f'Ray worker died {config.retries + 1} times on '
                                            f'this input (or its model did not load): {err}')
            except RayError as err:
                result = error_result(unit, f'Ray: {err}')
                idle.append(actor)
            on_result(unit, result)
    finally:
        for actor in actors:
            ray.kill(actor)  # also stops units still running after an interrupt
