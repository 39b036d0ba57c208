"""Atomic checkpoint files: safetensors for weights, torch.save (loaded weights_only) for state."""

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file


def _umask() -> int:
    """The process's umask (read by setting it, then restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Any) -> Path:
    """Call ``write(tmp_path)`` then rename over ``path``: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from other users
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_safetensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> Path:
    """Atomically write contiguous CPU copies of ``tensors`` with string metadata."""
    flat = {k: v.detach().to('cpu').contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(flat, str(tmp), metadata=meta))


def save_state(path: Path, state: dict[str, Any]) -> Path:
    """Atomically write a training state (tensors, numbers, strings, nested dicts/lists)."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict[str, Any]:
    """Load a state written by :func:`save_state` (``weights_only=True``: no code runs)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f'checkpoint not found: {path}')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # corrupt or foreign file: name it
        raise ValueError(f'{path}: not a readable UNIV checkpoint ({err})') from err


def json_safe(value: Any) -> Any:
    """A JSON-safe copy: NaN/inf -> None, numpy scalars -> Python, Paths -> str."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, obj: Any) -> Path:
    """Atomically write ``obj`` as strict, indented JSON: a NaN (an AP with no truth) is null."""
    text = json.dumps(json_safe(obj), indent=2, allow_nan=False) + '\n'
    return atomic_write(path, lambda tmp: tmp.write_text(text))
