"""Fleet autolabel (`univ autolabel INPUTS...`): real pairs, real teachers, local Ray, 2 workers.

Each input's labels must equal one single-process ``autolabel_input`` of it; the summary's totals
are the sums over the inputs; a damaged input gets an error row while the others complete (exit
3); a re-run of the same command labels only what is missing; one input alone runs as before.
"""

import argparse
import json
import os
import shutil
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from univ_core.autolabel import run as autolabel_cli
from univ_core.autolabel.config import AutolabelConfig
from univ_core.autolabel.fleet import AutolabelJob, output_keys
from univ_core.autolabel.run import autolabel_input, load_labeller
from univ_core.autolabel.sources import is_input
from univ_core.data.labelled import open_autolabel
from univ_core.fleet.cli import fleet_config, is_fleet
from univ_ros import cli

GOOD = ('drive', 'msrs_day', 'msrs_night', 'road')  # expand()'s order, after 'damaged'
PAIRS = {'drive': 1, 'msrs_day': 1, 'msrs_night': 1, 'road': 2}


def copy_msrs(data_dir: Path, name: str, root: Path, real: bool) -> Path:
    """An MSRS-layout folder with one pair (and its real boxes when ``real``)."""
    subs = ['train/vi', 'train/ir'] + (['detection/visible/train', 'detection/infrared/train']
                                       if real else [])
    for sub in subs:
        (root / sub).mkdir(parents=True)
        suffix = '.txt' if sub.startswith('detection') else '.png'
        shutil.copy(data_dir / 'msrs_mini' / sub / f'{name}{suffix}', root / sub)
    return root


@pytest.fixture(scope='module')
def inputs(data_dir, tmp_path_factory) -> Path:
    """inputs/: 3 dataset folders, a 1-pair bag, and a folder whose RGB image is garbage."""
    base = tmp_path_factory.mktemp('autolabel_fleet')
    root = base / 'inputs'
    copy_msrs(data_dir, '00001D', root / 'msrs_day', real=True)
    copy_msrs(data_dir, '00003N', root / 'msrs_night', real=False)
    for name in ('FLIR_00006', 'FLIR_00018'):
        for sub in ('vi', 'ir'):
            (root / 'road' / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy(data_dir / 'roadscene' / sub / f'{name}.jpg', root / 'road' / sub)
    source = copy_msrs(data_dir, '00002D', base / 'bag_source', real=False)
    with redirect_stdout(StringIO()), redirect_stderr(StringIO()):
        assert cli.main(['bag-from-pairs', str(source), '--format', 'msrs', '--out',
                         str(root / 'drive')]) == 0
    for sub in ('vi', 'ir'):
        (root / 'damaged' / sub).mkdir(parents=True)
    (root / 'damaged' / 'vi' / 'X.jpg').write_bytes(os.urandom(3000))
    shutil.copy(data_dir / 'roadscene' / 'ir' / 'FLIR_00006.jpg',
                root / 'damaged' / 'ir' / 'X.jpg')
    return root


@pytest.fixture(scope='module')
def reference(inputs) -> Path:
    """Each good input labelled by one ``autolabel_input`` in this process."""
    out = inputs.parent / 'reference'
    labeller = load_labeller(AutolabelConfig())
    for name in GOOD:
        autolabel_input(str(inputs / name), out / name, labeller, progress=False)
    return out


def run_cli(argv: list[str]) -> SimpleNamespace:
    """``univ autolabel ...``: exit code, stdout, stderr."""
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(['autolabel', *argv])
    return SimpleNamespace(code=code, out=out.getvalue(), err=err.getvalue())


@pytest.fixture(scope='module')
def fleet(ray_runtime, inputs) -> SimpleNamespace:
    """The fleet command over inputs/ on 2 Ray workers."""
    out = inputs.parent / 'fleet'
    argv = [str(inputs), '--out', str(out), '--workers', '2', '--quiet']
    return SimpleNamespace(argv=argv, out=out, first=run_cli(argv))


def label_files(folder: Path) -> dict:
    """Label lines and mask pixels under ``folder``, by relative path."""
    files = {str(p.relative_to(folder)): p.read_text()
             for p in sorted((folder / 'labels').rglob('*.txt'))}
    files |= {str(p.relative_to(folder)): cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
              for p in sorted((folder / 'masks').glob('*.png'))}
    return files


def assert_same_input(got: Path, want: Path) -> None:
    """Same label files, pair list (paths of a bag's images inside each) and provenance."""
    have, expected = label_files(got), label_files(want)
    assert set(have) == set(expected) and have, got
    for name, value in expected.items():
        assert np.array_equal(have[name], value) if isinstance(value, np.ndarray) \
            else have[name] == value, f'{got}: {name}'
    pairs = [(got / 'pairs.json').read_text().replace(str(got), '<out>'),
             (want / 'pairs.json').read_text().replace(str(want), '<out>')]
    assert pairs[0] == pairs[1], got
    for entry in json.loads((got / 'pairs.json').read_text())['pairs']:
        assert (got / entry['rgb']).is_file() and (got / entry['ir']).is_file()
    have, expected = (json.loads((f / 'provenance.json').read_text()) for f in (got, want))
    assert have | {'seconds': 0} == expected | {'seconds': 0}, got  # all but the time taken


def test_fleet_labels_equal_single_process_and_the_summary_sums_them(fleet, inputs, reference):
    first, out = fleet.first, fleet.out
    assert first.code == 3, first.err  # partial: the damaged input
    assert f"univ autolabel: error: image file {inputs / 'damaged' / 'vi' / 'X.jpg'} cannot " \
           'be decoded' in first.err
    assert 'fleet autolabel of 5 inputs: partial (4 ok, 0 damaged (labelled up to the damage), ' \
        '1 failed; 5 run now' in first.out
    summary = json.loads((out / 'summary.json').read_text())
    assert [(r['input'], r['status']) for r in summary['rows']] == \
        [(str(inputs / n), 'error' if n == 'damaged' else 'ok') for n in ('damaged', *GOOD)]
    assert [e['input'] for e in summary['errors']] == [str(inputs / 'damaged')]
    for name in GOOD:
        assert_same_input(out / name, reference / name)
    assert not (out / 'damaged').exists() and not list(out.rglob('.*.tmp'))
    provenance = [json.loads((reference / n / 'provenance.json').read_text()) for n in GOOD]
    totals = summary['totals']
    for key in ('pairs', 'night_pairs', 'real_label_pairs'):
        assert totals[key] == sum(p[key] for p in provenance), key
    assert totals['boxes'] == {m: {c: sum(p['counts'][m][c] for p in provenance)
                                   for c in summary['classes']} for m in ('rgb', 'thermal')}
    assert totals['pairs'] == sum(PAIRS.values()) and totals['real_label_pairs'] == 1
    assert totals['night_pairs'] >= 1 and sum(totals['boxes']['rgb'].values()) > 0
    assert [r['pairs'] for r in summary['rows'][1:]] == [PAIRS[n] for n in GOOD]
    assert summary['execution']['engine'] == 'ray' and summary['execution']['workers'] == 2
    assert sum(w['items'] for w in summary['workers'].values()) == totals['pairs']
    assert f"| `{inputs / 'road'}` | ok | `road/` | 2 |" in (out / 'summary.md').read_text()
    assert len(open_autolabel(out)) == totals['pairs']  # training reads it as one run's


def test_rerun_labels_only_what_is_missing(fleet, inputs):
    out = fleet.out
    stamps = {p: p.stat().st_mtime_ns for p in out.glob('*/labels/**/*.txt')}
    again = run_cli(fleet.argv)
    assert again.code == 3  # the damaged input is tried again, and fails again
    assert '1 failed; 1 run now, 4 done before)' in again.out
    summary = json.loads((out / 'summary.json').read_text())
    assert [bool(r.get('reused')) for r in summary['rows']] == [False, True, True, True, True]
    assert summary['totals']['pairs'] == sum(PAIRS.values())
    assert stamps and {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_one_input_alone_runs_as_before(inputs, reference):
    out = inputs.parent / 'single'
    source = inputs / 'msrs_day'
    result = run_cli([str(source), '--out', str(out), '--quiet'])
    assert result.code == 0, result.err
    provenance = json.loads((reference / 'msrs_day' / 'provenance.json').read_text())
    boxes = {m: sum(n.values()) for m, n in provenance['counts'].items()}
    assert result.out == (f"autolabel: {source}: 1 pairs ({provenance['night_pairs']} night), "
                          f"{boxes['rgb']} RGB / "
                          f"{boxes['thermal']} thermal boxes -> {out / 'msrs_day'}\n")
    assert sorted(p.name for p in out.iterdir()) == ['msrs_day']  # no fleet files
    assert_same_input(out / 'msrs_day', reference / 'msrs_day')


def test_inputs_keys_and_when_a_run_is_a_fleet(inputs, tmp_path):
    units = AutolabelJob().plan([str(inputs)])
    assert [(u.key, u.size) for u in units] == [('damaged', 1), *PAIRS.items()]
    paths = [tmp_path / 'a' / 'day1', tmp_path / 'b' / 'day1', tmp_path / 'results',
             tmp_path / 'drive.mcap', tmp_path / 'my road']
    paths[3].touch()  # a bag file: named by its stem
    keys = output_keys(paths)
    assert keys[0].startswith('day1-') and keys[1].startswith('day1-') and keys[0] != keys[1]
    assert keys[2].startswith('results-') and keys[3:] == ['drive', 'my_road']
    parser = argparse.ArgumentParser()
    autolabel_cli.add_arguments(parser)
    fleet = {
        'one folder': ([str(inputs / 'road')], False), 'one bag': ([str(inputs / 'drive')], False),
        'folder of inputs': ([str(inputs)], True), 'glob': ([str(inputs / 'msrs_*')], True),
        'two': ([str(inputs / 'road'), str(inputs / 'drive')], True),
        'one + --workers': ([str(inputs / 'road'), '--workers', '1'], True),
        'one + --retries': ([str(inputs / 'road'), '--retries', '0'], True),  # not dropped
        'one + --cpus-per-worker': ([str(inputs / 'road'), '--cpus-per-worker', '2'], True),
        'one + key=value': ([str(inputs / 'road'), 'box_threshold=0.4'], False),
    }
    for what, (argv, want) in fleet.items():
        args = parser.parse_intermixed_args([*argv, '--out', str(tmp_path / 'x')])
        autolabel_cli.split_overrides(args)  # argparse gives key=value words to the inputs
        assert is_fleet(args, is_input) is want, what
        assert args.overrides == [w for w in argv if '=' in w], what
    assert '3 partial' in parser.format_help() and '--workers' in parser.format_help()
    sizes = lambda argv: fleet_config(parser.parse_intermixed_args(  # noqa: E731
        [str(inputs), *argv, '--out', str(tmp_path / 'x')]), tmp_path / 'x', False, False).ray
    ray = sizes([])  # flags not given: the documented defaults
    assert (ray.cpus_per_worker, ray.gpus_per_worker, ray.retries) == (1.0, 0.0, 2)
    ray = sizes(['--retries', '0', '--cpus-per-worker', '2'])
    assert (ray.cpus_per_worker, ray.retries) == (2.0, 0)
