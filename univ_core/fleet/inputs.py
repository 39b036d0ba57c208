"""Inputs of a fleet command: paths, folders and globs -> input paths, keys and fingerprints."""

import glob
import hashlib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

GLOB_CHARS = re.compile(r'[*?\[]')
BAG_SUFFIXES = ('.mcap', '.db3')  # rosbag2 storage files


def is_bag(path: Path) -> bool:
    """A rosbag2 directory (with metadata.yaml) or a bare .mcap / .db3 file (no ROS needed)."""
    path = Path(path)
    if path.is_dir():
        return (path / 'metadata.yaml').is_file()
    return path.is_file() and path.suffix in BAG_SUFFIXES


def _under(folder: Path, is_input: Callable[[Path], bool]) -> list[Path]:
    """Inputs inside ``folder`` (recursively; an input folder is not descended into).

    Hidden folders (temporaries, caches) and fleet output folders (a ``fleet.json`` beside
    ``results/``: a replay's output bags are bags too) are skipped.
    """
    found = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = [d for d in dirs if not d.startswith('.') and not _fleet_output(here / d)]
        found += [here / d for d in dirs if is_input(here / d)]
        dirs[:] = sorted(d for d in dirs if not is_input(here / d))
        found += [here / f for f in files if not f.startswith('.') and is_input(here / f)]
    return sorted(found)


def _fleet_output(folder: Path) -> bool:
    """Whether ``folder`` is a fleet command's --out (see :mod:`univ_core.fleet.store`)."""
    return (folder / 'fleet.json').is_file() and (folder / 'results').is_dir()


def expand(inputs: Sequence[str], is_input: Callable[[Path], bool], what: str) -> list[Path]:
    """Input paths of ``inputs``, in the order given, each once.

    Each entry is an input itself, a folder searched recursively for inputs, or a glob pattern
    (``'runs/*/day1'``, quoted so the shell leaves it) whose matches are either. One input
    reached twice (two spellings, a symlink) counts once, as first given.

    Args:
        inputs: paths, folders, glob patterns.
        is_input: whether a path is one input (a bag, a folder of pairs).
        what: what an input is, for the error message.

    Raises:
        FileNotFoundError: an entry matches no input (the message names it and ``what``).
    """
    found: dict[Path, Path] = {}  # resolved path -> the path as first given
    for entry in inputs:
        matches = sorted(glob.glob(entry, recursive=True)) if GLOB_CHARS.search(entry) \
            else [entry]
        paths = []
        for match in map(Path, matches):
            if is_input(match):
                paths.append(match)
            elif match.is_dir():
                paths += _under(match, is_input)
        if not paths:
            state = 'does not exist' if not matches or not Path(matches[0]).exists() else \
                f'holds no {what}'
            raise FileNotFoundError(f'input {entry} {state}; expected {what}')
        for path in paths:
            found.setdefault(path.resolve(), path)
    return list(found.values())


def input_key(path: Path) -> str:
    """A result key for ``path``: its file-name-safe name + a hash of its absolute path.

    Two inputs of the same name in different folders never share results.
    """
    path = Path(path)
    name = re.sub(r'[^A-Za-z0-9._-]+', '_', path.stem if path.is_file() else path.name)
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    return f'{name}-{digest}'


def _files_under(folder: Path) -> Iterator[Path]:
    """Every file below ``folder``, symlinked folders followed once (rglob skips them)."""
    seen = set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree: do not loop
            dirs[:] = []
            continue
        seen.add(real)
        yield from (p for p in (Path(root) / n for n in names) if p.is_file())


def fingerprint(path: Path) -> str:
    """A hash of the names, sizes and modification times of the files of ``path``.

    It changes when the input is re-recorded or copied anew (a stale result is then redone).
    """
    path = Path(path)
    files = [path] if path.is_file() else sorted(_files_under(path))
    text = ';'.join(f'{p.relative_to(path.parent)}:{p.stat().st_size}:{p.stat().st_mtime_ns}'
                    for p in files)
    return hashlib.sha1(text.encode()).hexdigest()[:16]
