"""Register the editable univ_ros in the venv's ament index, as colcon would lay it out.

``pip install -e .`` installs neither setup.py's ``data_files`` (the ament index marker,
``share/univ_ros/{package.xml,launch,config}``) nor executables under ``lib/univ_ros/``, where
``ros2 launch`` and launch_ros's ``Node(package=..., executable=...)`` look. This script links
them into the venv of the Python that runs it (symlinks into the checkout, so edits are live,
like the editable install). Afterwards ``AMENT_PREFIX_PATH`` must include the venv (setup.sh
adds it to ``.venv/bin/activate``). Idempotent.

usage: .venv/bin/python tools/register_ament.py
"""

import os
import runpy
import sys
from pathlib import Path

import setuptools

REPO = Path(__file__).resolve().parents[1]


def setup_kwargs(project: Path) -> dict:
    """The keyword arguments ``project/setup.py`` passes to setuptools.setup (nothing built)."""
    captured: dict = {}
    original, cwd = setuptools.setup, os.getcwd()
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    try:
        os.chdir(project)
        runpy.run_path(str(project / 'setup.py'), run_name='__main__')
    finally:
        setuptools.setup = original
        os.chdir(cwd)
    return captured


def link(target: Path, path: Path) -> None:
    """Create or replace the symlink ``path`` -> ``target``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target)


def register(project: Path, prefix: Path) -> list[Path]:
    """Link ``project``'s data files and console scripts under ``prefix``; returns the links.

    Raises:
        FileNotFoundError: a console script is not installed (run ``pip install -e`` first).
    """
    kwargs = setup_kwargs(project)
    links = []
    for destination, files in kwargs.get('data_files', []):
        for item in files:
            links.append(prefix / destination / Path(item).name)
            link(project / item, links[-1])
    for spec in kwargs.get('entry_points', {}).get('console_scripts', []):
        script = prefix / 'bin' / spec.split('=')[0].strip()
        if not script.exists():
            raise FileNotFoundError(f'{script} is missing: pip install -e {project} first')
        links.append(prefix / 'lib' / kwargs['name'] / script.name)
        link(script, links[-1])
    return links


def main() -> int:
    """Register univ_ros in the running venv; 0 on success."""
    prefix = Path(sys.prefix)
    if prefix == Path(sys.base_prefix):
        print('register_ament: run it with the venv Python (.venv/bin/python)', file=sys.stderr)
        return 2
    try:
        links = register(REPO, prefix)
    except FileNotFoundError as err:
        print(f'register_ament: {err}', file=sys.stderr)
        return 1
    print(f'register_ament: univ_ros: {len(links)} files linked under {prefix} '
          f'(AMENT_PREFIX_PATH must include it)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
