"""Fleet replay (`univ replay BAGS...`): real msrs_mini bags on a local Ray runtime, 2 workers.

The fleet's scores must equal one replay of the same pairs in one concatenated bag; a damaged
bag gives its row and the others complete; a worker killed mid-bag is restarted by Ray and no
pair is counted twice; a re-run after an interruption replays only what is missing.
"""

import argparse
import functools
import json
import math
import os
import shutil
from pathlib import Path

import psutil
import pytest
from fleet_oracle import JitteredTruth
from rosbags.rosbag2 import Reader
from toy import write_toy_model

from univ_core.fleet.execute import RayConfig
from univ_core.fleet.inputs import expand
from univ_core.fleet.runner import FleetConfig, run_fleet
from univ_ros import cli
from univ_ros.replay import cli as replay_cli
from univ_ros.replay import topics as T
from univ_ros.replay.bag_from_pairs import BagConfig, write_bag
from univ_ros.replay.fleet import ReplayJob, is_bag
from univ_ros.replay.offline import ReplayConfig, replay_offline
from univ_ros.replay.samples import SampleSource, open_samples

SIZES = (2, 3, 2)  # pairs per bag: msrs_mini pairs 0-1, 2-4, 5-6
PAIRS = sum(SIZES)


class _Slice:
    """Pairs [start, start + size) of a labelled dataset."""

    def __init__(self, dataset, start: int, size: int) -> None:
        self.dataset, self.start, self.size = dataset, start, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        return self.dataset[self.start + index]


def write_pairs(source: SampleSource, start: int, size: int, out: Path) -> Path:
    part = SampleSource([_Slice(d, start, size) for d in source.loaders], size,
                        source.det_classes, source.seg_classes, source.source)
    write_bag(part, out, BagConfig(), progress=False)
    return out


@pytest.fixture(scope='module')
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp('fleet')


@pytest.fixture(scope='module')
def bags(data_dir, work) -> Path:
    """work/bags/bag0..bag2 (SIZES pairs each) and work/whole (all PAIRS pairs in one bag)."""
    source = open_samples(data_dir / 'msrs_mini', 'msrs', 'train')
    start = 0
    for index, size in enumerate(SIZES):
        write_pairs(source, start, size, work / 'bags' / f'bag{index}')
        start += size
    write_pairs(source, 0, PAIRS, work / 'whole')
    return work / 'bags'


def oracle_job(data_dir: Path, **stop) -> ReplayJob:
    factory = functools.partial(JitteredTruth, str(data_dir / 'msrs_mini'), PAIRS, **stop)
    return ReplayJob(factory, ReplayConfig(progress=False), {'predictor': 'oracle'}, 'oracle')


@pytest.fixture(scope='module')
def reference(data_dir, bags, work) -> dict:
    """One single-process replay of the concatenated bag."""
    oracle = JitteredTruth(str(data_dir / 'msrs_mini'), PAIRS)
    return replay_offline(work / 'whole', work / 'whole_out', oracle, ReplayConfig(progress=False))


def assert_same(got, want, path='') -> None:
    """Equal JSON values, floats to 1e-6 (None = a NaN score)."""
    if isinstance(want, dict):
        assert set(got) == set(want), path
        for key in want:
            assert_same(got[key], want[key], f'{path}.{key}')
    elif isinstance(want, float) and not math.isnan(want):
        assert got == pytest.approx(want, abs=1e-6), path
    else:
        assert got == want, path


def assert_counts_equal_reference(report: dict, reference: dict) -> None:
    assert_same(report['scores'], reference['scores'])
    assert reference['scores']['detection']['fused']['map50'] > 0.5  # the equality means a lot
    for key in ('synchronised', 'processed', 'sync_misses', 'bad_inputs'):
        assert report['pairs'][key] == reference['pairs'][key], key
    assert report['pairs']['processed'] == PAIRS
    assert report['images'] == reference['images'] == {'rgb': PAIRS, 'thermal': PAIRS}
    assert report['latency_ms']['count'] == reference['latency_ms']['count'] == PAIRS
    for mode, scores in report['scores']['detection'].items():
        assert scores['images'] == PAIRS, mode


def output_detections(out: Path) -> list[int]:
    """Detection messages in each bag's output bag, bags in order."""
    counts = []
    for index in range(len(SIZES)):
        (folder,) = (out / 'bags').glob(f'bag{index}-*')
        with Reader(folder / 'bag') as reader:
            counts.append(sum(1 for c, _, _ in reader.messages() if c.topic == T.DETECTIONS))
    return counts


def test_fleet_report_equals_one_replay_of_the_concatenated_bags(ray_runtime, data_dir, bags,
                                                                 reference, work):
    out = work / 'fleet'
    outcome = run_fleet(oracle_job(data_dir), [str(bags)],
                        FleetConfig(out, RayConfig(workers=2), progress=False))
    assert (outcome.status, outcome.exit_code, len(outcome.ran)) == ('complete', 0, 3)
    report = json.loads((out / 'report.json').read_text())
    assert report == outcome.report
    assert_counts_equal_reference(report, reference)
    assert [r['pairs']['processed'] for r in report['rows']] == list(SIZES)
    assert output_detections(out) == list(SIZES)  # one output bag per input bag
    assert report['execution']['engine'] == 'ray' and report['execution']['workers'] == 2
    workers = report['workers']
    assert len(workers) == 2 and sum(w['items'] for w in workers.values()) == PAIRS
    assert all(w['items_per_s'] > 0 for w in workers.values())
    assert {'latency.png', 'per_class.png'} <= {p.name for p in out.iterdir()}
    assert '| `' + str(bags / 'bag1') + '` | ok | 3 |' in (out / 'report.md').read_text()


def test_damaged_bags_give_error_rows_the_rest_completes_exit_partial(ray_runtime, bags, work,
                                                                      capsys):
    garbage = work / 'damaged' / 'garbage.mcap'
    garbage.parent.mkdir()
    garbage.write_bytes(os.urandom(4096))
    truncated = work / 'damaged' / 'truncated'
    shutil.copytree(bags / 'bag1', truncated)
    storage = truncated / 'bag1.mcap'
    os.truncate(storage, int(storage.stat().st_size * 0.6))
    config = work / 'toy.yaml'
    config.write_text(f'/**:\n  ros__parameters:\n    model: '
                      f'{write_toy_model(work / "toy.safetensors")}\n    device: cpu\n')
    out = work / 'damaged_out'
    argv = ['replay', str(bags / 'bag0'), str(garbage), str(truncated), str(bags / 'bag2'),
            '--out', str(out), '--config', str(config), '--workers', '2', '--quiet']
    assert cli.main(argv) == 3  # partial
    err = capsys.readouterr().err
    assert f'bag {garbage} has no topic' in err and f'{storage} is truncated or corrupt' in err
    report = json.loads((out / 'report.json').read_text())
    assert report['status'] == 'partial' and report['partial'] is True
    assert [r['status'] for r in report['rows']] == ['ok', 'error', 'partial', 'ok']
    assert [e['input'] for e in report['errors']] == [str(garbage), str(truncated)]
    salvaged = report['rows'][2]['pairs']['processed']
    assert 0 < salvaged < SIZES[1]
    assert report['pairs']['processed'] == report['latency_ms']['count'] == \
        SIZES[0] + salvaged + SIZES[2]
    for row in (report['rows'][0], report['rows'][3]):
        assert json.loads((out / row['output'] / 'report.json').read_text())['partial'] is False


def test_killed_worker_is_restarted_and_every_pair_counted_once(ray_runtime, data_dir, bags,
                                                                reference, work):
    marker = work / 'killed.pid'
    job = oracle_job(data_dir, kill_after=4, marker=str(marker))  # 3 modes/pair: mid 2nd pair
    out = work / 'killed'
    outcome = run_fleet(job, [str(bags)], FleetConfig(out, RayConfig(workers=2, retries=2),
                                                      progress=False))
    killed = int(marker.read_text())  # a worker did die mid-bag
    assert not psutil.pid_exists(killed)
    assert outcome.status == 'complete', [r.get('error') for r in outcome.report['rows']]
    report = outcome.report
    assert_counts_equal_reference(report, reference)
    assert not any(r['worker'].endswith(f':{killed}') for r in report['rows'])
    assert sum(w['items'] for w in report['workers'].values()) == PAIRS
    assert output_detections(out) == list(SIZES)
    assert not list(out.rglob('.*.tmp'))  # the dead attempt's temporaries are gone


def test_retries_are_counted_per_bag_not_per_worker(ray_runtime, data_dir, bags, reference,
                                                    work):
    """One worker, --retries 1, dying once in every bag (its second pair): each bag is re-run
    once and completes; a Ray actor's own restart budget would give up on the second bag."""
    marker = work / 'per_bag'
    job = oracle_job(data_dir, marker=str(marker), kill_on_pairs=(1, 3, 6))
    out = work / 'per_bag_out'
    outcome = run_fleet(job, [str(bags)], FleetConfig(out, RayConfig(workers=1, retries=1),
                                                      progress=False))
    killed = {int(p.read_text()) for p in work.glob('per_bag.*')}
    assert len(killed) == 3  # three deaths, each a new process
    assert outcome.status == 'complete', [r.get('error') for r in outcome.report['rows']]
    assert_counts_equal_reference(outcome.report, reference)
    assert output_detections(out) == list(SIZES)


def test_rerun_after_an_interrupted_run_replays_only_missing_bags(ray_runtime, data_dir, bags,
                                                                   reference, work):
    out = work / 'resumed'
    in_second_bag = 3 * SIZES[0] + 2  # predict calls: 3 modes per pair
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C during bag1, in-process run
        run_fleet(oracle_job(data_dir, interrupt_after=in_second_bag), [str(bags)],
                  FleetConfig(out, use_ray=False, progress=False))
    (done,) = (out / 'results').glob('*.json')
    assert done.name.startswith('bag0-')
    stamp = done.stat().st_mtime_ns
    outcome = run_fleet(oracle_job(data_dir), [str(bags)],
                        FleetConfig(out, RayConfig(workers=2), progress=False))
    assert outcome.reused == [done.stem]
    assert sorted(k.split('-')[0] for k in outcome.ran) == ['bag1', 'bag2']
    assert done.stat().st_mtime_ns == stamp
    assert_counts_equal_reference(outcome.report, reference)
    assert outcome.report['bags']['reused'] == 1
    assert sum(w['items'] for w in outcome.report['workers'].values()) == SIZES[1] + SIZES[2]


def test_inputs_files_folders_globs_and_bad_commands(bags, work, capsys):
    bag0, bag1, bag2 = (bags / f'bag{i}' for i in range(3))
    assert expand([str(bags)], is_bag, 'bags') == [bag0, bag1, bag2]
    assert expand([str(bags / 'bag[12]'), str(bag2), str(bag0)], is_bag, 'bags') == \
        [bag1, bag2, bag0]
    with pytest.raises(FileNotFoundError, match='nowhere.* does not exist; expected bags'):
        expand([str(work / 'nowhere')], is_bag, 'bags')
    base = ['--out', str(work / 'x'), '--quiet']
    missing = ['--model', str(work / 'missing.safetensors')]
    assert cli.main(['replay', str(bag0), str(bag1), '--rate', '1', *base]) == 1
    assert 'online replay (--rate) takes one bag' in capsys.readouterr().err
    assert cli.main(['replay', str(work / 'none*'), *base]) == 1
    assert f"input {work / 'none*'} does not exist" in capsys.readouterr().err
    assert cli.main(['replay', str(bags), *base, *missing]) == 1
    assert 'missing.safetensors not found' in capsys.readouterr().err
    assert not (work / 'x').exists()
    parser = argparse.ArgumentParser()
    replay_cli.add_arguments(parser)
    assert '3 partial' in parser.format_help() and '--workers' in parser.format_help()


def test_rerun_keeps_finished_bags_retries_failed_ones_and_keeps_settings(bags, data_dir,
                                                                         work):
    garbage = work / 'settings_in' / 'garbage.mcap'
    garbage.parent.mkdir()
    garbage.write_bytes(os.urandom(1024))
    out = work / 'settings'
    run = functools.partial(run_fleet, oracle_job(data_dir), [str(bags / 'bag0'), str(garbage)])
    first = run(FleetConfig(out, use_ray=False, progress=False))  # in this process
    assert (first.status, first.exit_code, first.report['execution']['engine']) == \
        ('partial', 3, 'in-process')
    again = run(FleetConfig(out, use_ray=False, progress=False))
    assert (again.ran, again.reused) == ([first.ran[1]], [first.ran[0]])  # the error is retried
    assert again.report['pairs'] == first.report['pairs']
    other = ReplayJob(oracle_job(data_dir).predictor_factory, ReplayConfig(mode='rgb'),
                      {'predictor': 'oracle'}, 'oracle')
    with pytest.raises(ValueError, match='other settings \\(replay differ\\); pass --force'):
        run_fleet(other, [str(bags / 'bag0')], FleetConfig(out, use_ray=False))
    with pytest.raises(ValueError, match='is not a fleet output folder'):
        run(FleetConfig(bags, use_ray=False))


def fake_bag(path: Path) -> Path:
    """A folder is_bag() takes for a bag (expansion and fingerprints read no message)."""
    path.mkdir(parents=True)
    (path / 'metadata.yaml').write_text('rosbag2_bagfile_information: {}\n')
    return path


def test_expansion_counts_an_input_once_and_skips_fleet_outputs(tmp_path):
    drive = fake_bag(tmp_path / 'bags' / 'drive')
    (tmp_path / 'alias').symlink_to(drive)  # the same bag through a symlink
    out = tmp_path / 'bags' / 'fleet_out'  # `univ replay bags --out bags/fleet_out`, run twice
    fake_bag(out / 'bags' / 'drive-1234abcd' / 'bag')
    (out / 'results').mkdir()
    (out / 'fleet.json').write_text('{}')
    assert expand([str(tmp_path / 'bags'), str(drive.resolve()), str(tmp_path / 'alias')],
                  is_bag, 'bags') == [drive]


def test_a_fingerprint_sees_files_behind_symlinked_folders(tmp_path):
    from univ_core.fleet.inputs import fingerprint

    images = tmp_path / 'store' / 'images'
    images.mkdir(parents=True)
    (images / 'a.png').write_bytes(b'1')
    dataset = tmp_path / 'dataset'
    dataset.mkdir()
    (dataset / 'vi').symlink_to(images)
    (images / 'up').symlink_to(tmp_path)  # a link back up the tree: walked once, no loop
    (dataset / 'gone').symlink_to(tmp_path / 'nothing')  # a dangling link: no file
    before = fingerprint(dataset)
    (images / 'a.png').write_bytes(b'22')  # re-recorded behind the link
    assert fingerprint(dataset) != before


def test_replay_results_are_keyed_by_the_model_files_content(tmp_path, data_dir):
    model = write_toy_model(tmp_path / 'model.safetensors')
    job = ReplayJob(oracle_job(data_dir).predictor_factory, ReplayConfig(), {'model': str(model)})
    before = job.settings()
    write_toy_model(model, seed=1)  # re-exported to the same path
    assert job.settings() != before and job.settings()['model_sha256']


def test_a_damaged_or_replaced_result_is_redone_not_trusted(tmp_path):
    import numpy as np

    from univ_core.fleet.job import Unit, UnitResult
    from univ_core.fleet.store import ResultStore

    store = ResultStore(tmp_path / 'out', 'replay', {'a': 1})
    store.open(force=False)
    unit = Unit('bag0-1', 'bag0', 3, 'fp')
    store.save(unit, UnitResult('bag0-1', 'ok', 3, {'n': 3}, {'x': np.arange(3)}))
    assert store.load(unit) is not None
    arrays = tmp_path / 'out' / 'results' / 'bag0-1.npz'
    arrays.write_bytes(arrays.read_bytes()[:20])  # cut short: a crash without fsync
    assert store.load(unit) is None
    store.forget(unit)  # a redo starts: no old row left to trust if it dies
    assert not list((tmp_path / 'out' / 'results').iterdir())
