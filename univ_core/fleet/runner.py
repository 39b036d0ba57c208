""":func:`run_fleet`: many inputs through one job, resumable, on Ray or in this process.

Plan the units, skip the ones a previous run finished (same settings, same input files), run
the rest (Ray actors, or here when Ray is absent or one worker is asked for), store each
result atomically as it arrives, then merge every result into one report. Killing the command
at any point loses only the units that were running; the same command resumes.
"""

import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

from tqdm import tqdm

from univ_core.fleet.execute import RayConfig, run_in_process, run_on_ray
from univ_core.fleet.job import FleetJob, Unit, UnitResult
from univ_core.fleet.store import ResultStore

# Exit codes of fleet commands: every input done / some failed or damaged (the report holds
# the rest) / nothing could be evaluated. Bad command input is 1 too, usage errors 2 (argparse).
EXIT_CODES = {'complete': 0, 'partial': 3, 'failed': 1}


@dataclass
class FleetConfig:
    """Where results go and how the units run."""

    out: Path  # the fleet output folder (created; re-used by a re-run)
    ray: RayConfig = field(default_factory=RayConfig)
    use_ray: bool = True  # False: in this process (also when Ray is not installed)
    force: bool = False  # redo every unit (and accept other settings in an existing --out)
    progress: bool = True  # one tqdm bar over all units


@dataclass
class FleetOutcome:
    """What :func:`run_fleet` did."""

    status: str  # complete | partial | failed (see EXIT_CODES)
    report: dict  # the merged report, as written
    ran: list[str]  # keys of the units run now
    reused: list[str]  # keys of the units a previous run had finished

    @property
    def exit_code(self) -> int:
        """The command's exit code for ``status``."""
        return EXIT_CODES[self.status]


@contextmanager
def ray_session(config: RayConfig) -> Iterator[None]:
    """Connect to Ray (``config.address``) or start a local runtime; shut down what we started.

    A runtime the caller already started (``ray.init`` before) is used and left running.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    os.environ.setdefault('RAY_DISABLE_USAGE_STATS', '1')  # never phone home
    local = {} if config.address else {'include_dashboard': False}
    ray.init(address=config.address, log_to_driver=False, logging_level='WARNING', **local)
    try:
        yield
    finally:
        ray.shutdown()


def fit_workers(config: RayConfig, requested: int | None) -> int:
    """``requested`` actors, or as many as the runtime's CPUs/GPUs hold; checked against it."""
    import ray

    total = ray.cluster_resources()
    holds = [int(total.get('CPU', 0) // config.cpus_per_worker) if config.cpus_per_worker
             else 10**6, int(total.get('GPU', 0) // config.gpus_per_worker)
             if config.gpus_per_worker else 10**6]
    fits = min(holds)
    if requested is None:
        if fits < 1:
            raise ValueError(f'the Ray runtime ({total.get("CPU", 0):g} CPUs, '
                             f'{total.get("GPU", 0):g} GPUs) cannot hold one worker of '
                             f'{config.cpus_per_worker:g} CPUs + {config.gpus_per_worker:g} GPUs')
        return fits
    if requested > fits:
        message = (f'--workers {requested} x ({config.cpus_per_worker:g} CPUs, '
                   f'{config.gpus_per_worker:g} GPUs) exceeds the Ray runtime '
                   f'({total.get("CPU", 0):g} CPUs, {total.get("GPU", 0):g} GPUs)')
        if config.address is None:  # a local runtime does not grow: the rest would never start
            raise ValueError(message)
        print(f'warning: {message}; extra workers wait for nodes', file=sys.stderr)
    return requested


def worker_stats(results: Sequence[UnitResult]) -> dict:
    """Per worker (host:pid) of this run: units, items, busy seconds, items per busy second."""
    stats: dict[str, dict] = {}
    for result in results:
        name = result.row.get('worker') or '(none)'
        entry = stats.setdefault(name, {'units': 0, 'items': 0, 'busy_s': 0.0})
        entry['units'] += 1
        entry['items'] += result.items
        entry['busy_s'] += result.row.get('wall_s') or 0.0
    for entry in stats.values():
        entry['items_per_s'] = entry['items'] / entry['busy_s'] if entry['busy_s'] else None
    return stats


def _status(results: Sequence[UnitResult]) -> str:
    if all(r.status == 'ok' for r in results):
        return 'complete'
    return 'failed' if all(r.status == 'error' for r in results) else 'partial'


def _execute(job: FleetJob, todo: list[Unit], config: FleetConfig, on_result) -> dict:
    """Run ``todo``; returns how (for the summary)."""
    if not todo:
        return {'engine': 'none (every input was done)', 'workers': 0}
    if config.use_ray and find_spec('ray') is None:
        if config.ray.address:
            raise ValueError(f'--address {config.ray.address}: Ray is not installed '
                             f'(pip install ray)')
        print('Ray is not installed: running in this process', file=sys.stderr)
    if not (config.use_ray and find_spec('ray') is not None):
        run_in_process(job, todo, config.out, on_result)
        return {'engine': 'in-process', 'workers': 1}
    with ray_session(config.ray):
        import ray

        workers = fit_workers(config.ray, config.ray.workers)
        ray_config = RayConfig(config.ray.address, workers, config.ray.cpus_per_worker,
                               config.ray.gpus_per_worker, config.ray.retries)
        run_on_ray(job, todo, config.out, ray_config, on_result)
        return {'engine': 'ray', 'workers': workers, 'address': config.ray.address or 'local',
                'ray': ray.__version__, 'cpus_per_worker': config.ray.cpus_per_worker,
                'gpus_per_worker': config.ray.gpus_per_worker, 'retries': config.ray.retries}


def run_fleet(job: FleetJob, inputs: Sequence[str], config: FleetConfig) -> FleetOutcome:
    """Run ``job`` over ``inputs`` (paths, folders, globs) into ``config.out`` and merge.

    Raises:
        FileNotFoundError: an input matches nothing.
        ValueError: ``out`` holds other things or another run's settings; bad Ray sizes.
    """
    units = job.plan(inputs)
    if len({u.key for u in units}) != len(units):
        raise ValueError('two inputs map to the same result key; name them differently')
    store = ResultStore(config.out, job.kind, job.settings())
    store.open(config.force)
    results = {} if config.force else {u.key: r for u in units if (r := store.load(u))}
    reused = list(results)
    todo = [u for u in units if u.key not in results]
    for unit in todo:  # its output is about to be replaced: the old row must not outlive it
        store.forget(unit)
    bar = tqdm(total=sum(u.size for u in units), unit=getattr(job, 'items_name', 'item'),
               desc=f'{job.kind} ({len(units)} inputs)', disable=not config.progress,
               initial=sum(u.size for u in units if u.key in results))

    def on_result(unit: Unit, result: UnitResult) -> None:
        store.save(unit, result)
        results[unit.key] = result
        bar.set_postfix_str(f'inputs {len(results)}/{len(units)}', refresh=False)
        bar.update(unit.size)

    start = time.perf_counter()
    try:
        execution = _execute(job, todo, config, on_result)
    finally:
        bar.close()
    store.sweep()
    ran = [u.key for u in todo]
    for key in reused:
        results[key].row['reused'] = True  # finished by an earlier run
    ordered = [results[u.key] for u in units]
    status = _status(ordered)
    summary = {'status': status, 'inputs': len(units), 'ran': len(ran), 'reused': len(reused),
               'counts': {s: sum(r.status == s for r in ordered) for s in ('ok', 'partial',
                                                                           'error')},
               'wall_s': time.perf_counter() - start, **execution,
               'worker_stats': worker_stats([results[k] for k in ran])}
    report = job.merge(ordered, config.out, summary)
    return FleetOutcome(status, report, ran, reused)
