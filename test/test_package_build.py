"""The ament_python package: colcon builds it and the installed entry points start."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_colcon_build_installs_entry_points_and_share_files(tmp_path: Path) -> None:
    colcon = shutil.which('colcon', path=f'{Path(sys.executable).parent}:{os.environ["PATH"]}')
    assert colcon, 'colcon not found: ./setup.sh installs colcon-common-extensions'
    build = subprocess.run(
        [colcon, '--log-base', str(tmp_path / 'log'), 'build', '--base-paths', str(REPO),
         '--packages-select', 'univ_ros', '--build-base', str(tmp_path / 'build'),
         '--install-base', str(tmp_path / 'install')],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    prefix = tmp_path / 'install' / 'univ_ros'
    share = prefix / 'share' / 'univ_ros'
    assert (prefix / 'share/ament_index/resource_index/packages/univ_ros').is_file()
    assert (share / 'package.xml').is_file()
    assert (share / 'launch' / 'perception.launch.py').is_file()
    assert (share / 'config' / 'perception.yaml').is_file()
    for script in ('perception_node', 'univ'):
        run = subprocess.run(
            ['bash', '-c', f'source {tmp_path}/install/setup.bash && '
             f'{prefix}/lib/univ_ros/{script} --help'],
            capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, f'{script} --help failed:\n{run.stdout}{run.stderr}'
        assert 'usage' in run.stdout.lower()
    # the installed library finds its config files in share/ (no repository beside it)
    probe = ('import univ_core; from univ_core.autolabel.config import AutolabelConfig, '
             'ClassTable; c = AutolabelConfig().classes; print(univ_core.__file__); print(c); '
             'print(ClassTable.load(c).det_classes)')
    run = subprocess.run(['bash', '-c', f'source {tmp_path}/install/setup.bash && '
                          f'{sys.executable} -c "{probe}"'], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    module, classes, names = run.stdout.splitlines()[-3:]
    assert module.startswith(str(prefix)) and classes == str(share / 'config' / 'autolabel.yaml')
    assert names == "['person', 'bicycle', 'car']"
