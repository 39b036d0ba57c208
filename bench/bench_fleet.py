"""Fleet replay wall time: 1 vs 2 Ray workers on the same bags (and the in-process run).

Bags: ``--bags`` bags of ``--pairs-per-bag`` real msrs_mini pairs (boxes, so every pair runs in
fused, rgb and thermal and is scored). Model: the default architecture (ViT-S/14 + UPerNet +
FCOS, random heads). Each variant is a whole ``run_fleet`` into a fresh folder, timed from the
call to the merged report, so worker start-up and model loading are included, as a user sees
them; the local Ray runtime is started once, before the rounds. Variants run interleaved. The
merged scores of every variant must be equal (the run fails otherwise).

usage: python bench/bench_fleet.py [--bags 4] [--pairs-per-bag 4] [--rounds 2]
"""

import argparse
import functools
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from common import REPO, default_model, print_header, save_json, table

from univ_core.fleet.execute import RayConfig
from univ_core.fleet.runner import FleetConfig, run_fleet
from univ_core.models.model_file import save_model
from univ_ros.replay.bag_from_pairs import BagConfig, write_bag
from univ_ros.replay.cli import predictor_from
from univ_ros.replay.fleet import ReplayJob
from univ_ros.replay.offline import ReplayConfig
from univ_ros.replay.samples import SampleSource, open_samples

DATA = Path(os.environ.get('UNIV_DATA', REPO.parent / 'shared' / 'data'))


class _Slice:
    """Pairs [start, start + size) of a dataset."""

    def __init__(self, dataset, start: int, size: int) -> None:
        self.dataset, self.start, self.size = dataset, start, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        return self.dataset[self.start + index]


def make_bags(folder: Path, bags: int, pairs: int) -> Path:
    source = open_samples(DATA / 'msrs_mini', 'msrs', 'train', bags * pairs)
    for index in range(bags):
        part = SampleSource([_Slice(d, index * pairs, pairs) for d in source.loaders], pairs,
                            source.det_classes, source.seg_classes, source.source)
        write_bag(part, folder / f'bag{index}', BagConfig(), progress=False)
    return folder


def same_scores(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_scores(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-6
    return a == b


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--bags', type=int, default=4)
    parser.add_argument('--pairs-per-bag', type=int, default=4)
    parser.add_argument('--input-size', type=int, nargs=2, default=[224, 280])
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--json', default=None)
    args = parser.parse_args()
    info = print_header('Fleet replay: 1 vs 2 Ray workers on the same bags')
    import ray

    os.environ.setdefault('RAY_DISABLE_USAGE_STATS', '1')
    # Ray kills workers when the node's memory is > 95% used by anyone (here: other jobs).
    os.environ.setdefault('RAY_memory_monitor_refresh_ms', '0')
    work = Path(tempfile.mkdtemp(prefix='bench_fleet_'))
    bags = make_bags(work / 'bags', args.bags, args.pairs_per_bag)
    model_file = save_model(work / 'model.safetensors', *default_model(tuple(args.input_size)))
    params = {'model': str(model_file), 'device': args.device, 'mode': 'fused'}
    job = ReplayJob(functools.partial(predictor_from, params), ReplayConfig(progress=False),
                    params, str(model_file))
    cpus = os.cpu_count() or 2
    variants = {f'in-process, 1 worker ({cpus} torch threads)': dict(use_ray=False),
                'Ray, 1 worker x 1 CPU': dict(ray=RayConfig(workers=1, cpus_per_worker=1)),
                'Ray, 2 workers x 1 CPU': dict(ray=RayConfig(workers=2, cpus_per_worker=1))}
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level='ERROR')
    times: dict[str, list[float]] = {name: [] for name in variants}
    rates: dict[str, list[float]] = {name: [] for name in variants}  # pairs/s per busy worker
    reports: dict[str, dict] = {}
    try:
        for r in range(args.rounds):
            names = list(variants)
            for name in names[r % len(names):] + names[: r % len(names)]:
                out = work / f'out_{r}_{names.index(name)}'
                start = time.perf_counter()
                outcome = run_fleet(job, [str(bags)], FleetConfig(out, progress=False,
                                                                  **variants[name]))
                times[name].append(time.perf_counter() - start)
                assert outcome.status == 'complete', outcome.report['errors']
                reports[name] = outcome.report
                rates[name] += [w['items_per_s'] for w in outcome.report['workers'].values()]
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)  # bags hold dataset images
    pairs = args.bags * args.pairs_per_bag
    one, two = 'Ray, 1 worker x 1 CPU', 'Ray, 2 workers x 1 CPU'
    rows, results = [], {}
    for name, seconds in times.items():
        wall = statistics.median(seconds)
        per_worker = statistics.median(rates[name])
        results[name] = {'wall_s': seconds, 'pairs_per_s': pairs / wall,
                         'per_worker_pairs_per_s': per_worker,
                         'speedup_vs_1_worker': statistics.median(times[one]) / wall}
        rows.append([name, wall, pairs / wall, per_worker,
                     f"{results[name]['speedup_vs_1_worker']:.2f}x"])
    ratio = statistics.median(times[one]) / statistics.median(times[two])
    print(f'{args.bags} bags x {args.pairs_per_bag} msrs_mini pairs (each in fused, rgb and '
          f'thermal), model input {args.input_size[0]}x{args.input_size[1]}, {args.device}, '
          f'median of {args.rounds} interleaved rounds; wall = the whole run_fleet call '
          f'(worker start-up and model load included)\n')
    print(table(['variant', 'wall s', 'pairs/s', 'pairs/s per worker (busy)',
                 'speed-up vs 1 Ray worker'], rows))
    print(f'\n- 1 vs 2 Ray workers: wall time ratio {ratio:.2f} (2 workers / 1 worker: '
          f'{1 / ratio:.2f} of the time)')
    first = next(iter(reports.values()))['scores']
    assert all(same_scores(r['scores'], first) for r in reports.values()), 'scores differ'
    save_json(args.json, {'machine': info, 'pairs': pairs, 'ratio_1_over_2_workers': ratio,
                          'results': results})
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
