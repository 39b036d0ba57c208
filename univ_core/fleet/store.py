"""The fleet output folder's bookkeeping: ``fleet.json`` and one result per unit.

``results/<key>.npz`` (arrays) is written first and ``results/<key>.json`` (the row) last, each
atomically (temporary file + rename), so a JSON file is the mark of a finished unit: a run
killed at any moment leaves each unit either finished or absent, never half-written. A result
is reused only with the same job settings and the same input fingerprint.
"""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from univ_core.fleet.job import FINAL, Unit, UnitResult
from univ_core.train.checkpoint import atomic_write, write_json

MANIFEST = 'fleet.json'
RESULTS = 'results'


def settings_hash(kind: str, settings: dict) -> str:
    """A short stable hash of a job's kind and settings."""
    text = json.dumps({'kind': kind, 'settings': settings}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


class ResultStore:
    """Reads and writes the unit results of one fleet output folder.

    Args:
        out: the fleet output folder.
        kind: the job kind ('replay', ...).
        settings: the job's JSON-able settings.
    """

    def __init__(self, out: Path, kind: str, settings: dict) -> None:
        self.out = Path(out)
        self.kind, self.settings = kind, settings
        self.hash = settings_hash(kind, settings)

    def open(self, force: bool) -> None:
        """Check (or create) ``fleet.json``.

        Raises:
            ValueError: ``out`` holds something else, or a fleet run with other settings (and
                not ``force``).
        """
        manifest = self.out / MANIFEST
        if manifest.is_file():
            old = json.loads(manifest.read_text())
            if old.get('hash') != self.hash and not force:
                changed = sorted(k for k in {**old.get('settings', {}), **self.settings}
                                 if old.get('settings', {}).get(k) != self.settings.get(k))
                raise ValueError(f'{self.out} holds a {old.get("kind")} run with other settings '
                                 f'({", ".join(changed) or "kind"} differ); pass --force to redo '
                                 f'every input, or choose another --out')
        elif self.out.exists() and any(self.out.iterdir()):
            raise ValueError(f'--out {self.out} exists and is not a fleet output folder (no '
                             f'{MANIFEST}); choose another --out')
        write_json(manifest, {'kind': self.kind, 'hash': self.hash, 'settings': self.settings})

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.out / RESULTS / f'{key}.json', self.out / RESULTS / f'{key}.npz'

    def load(self, unit: Unit) -> UnitResult | None:
        """The finished result of ``unit`` (same settings and input), or None."""
        row_path, arrays_path = self._paths(unit.key)
        try:
            saved = json.loads(row_path.read_text())
        except (OSError, ValueError):
            return None
        if (saved.get('status') not in FINAL or saved.get('settings') != self.hash
                or saved.get('fingerprint') != unit.fingerprint):
            return None
        try:
            with np.load(arrays_path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except Exception:  # lost, cut or damaged (BadZipFile, EOFError...): redo the unit
            return None
        return UnitResult(unit.key, saved['status'], saved['items'], saved['row'], arrays)

    def forget(self, unit: Unit) -> None:
        """Remove ``unit``'s result before it is redone (a redo that dies leaves no old row)."""
        for path in self._paths(unit.key):
            path.unlink(missing_ok=True)

    def save(self, unit: Unit, result: UnitResult) -> None:
        """Store ``result`` atomically (arrays first, then the row that marks it finished)."""
        row_path, arrays_path = self._paths(unit.key)

        def write_arrays(tmp: Path) -> None:
            with open(tmp, 'wb') as file:  # a file object: np.savez adds no '.npz' suffix
                np.savez(file, **result.arrays)

        atomic_write(arrays_path, write_arrays)
        write_json(row_path, {'key': unit.key, 'status': result.status, 'items': result.items,
                              'fingerprint': unit.fingerprint, 'settings': self.hash,
                              'row': result.row})

    def sweep(self) -> None:
        """Remove the temporary files of attempts that died (call when no worker runs)."""
        for leftover in [*self.out.glob('.*.tmp'), *self.out.glob('*/.*.tmp')]:
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
