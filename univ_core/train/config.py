"""Dataclass configs from YAML plus ``key=value`` overrides; unknown keys are errors."""

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar('T')


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Turn YAML values into the field's type: nested dataclasses, tuples, Optional."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)][:1]
        return _coerce(inner, value, where)
    if origin is tuple and isinstance(value, list | tuple):
        return tuple(value)
    if tp is float and isinstance(value, int | str):
        return float(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = 'config') -> T:
    """Build dataclass ``cls`` from ``data``; a key it does not have raises ValueError."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f'{where}: unknown keys {unknown}; expected some of {sorted(fields)}')
    hints = typing.get_type_hints(cls)
    data = {k: _with_defaults(fields[k], hints[k], v) for k, v in data.items()}
    return cls(**{k: _coerce(hints[k], v, f'{where}.{k}') for k, v in data.items()})


def _with_defaults(f: dataclasses.Field, tp: Any, value: Any) -> Any:
    """A partial dict for a nested dataclass field (``data.holdout=8``) on top of its default."""
    if not (dataclasses.is_dataclass(tp) and isinstance(value, dict)):
        return value
    if f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    elif f.default is not dataclasses.MISSING:
        default = f.default
    else:
        return value
    return {**dataclasses.asdict(default), **value} if dataclasses.is_dataclass(default) \
        else value


def load_config(cls: type[T], path: Path | None, overrides: list[str] = ()) -> T:
    """Read YAML ``path`` (optional) into ``cls``, then apply ``a.b=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f'config file not found: {path}')
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f'{path}: not valid YAML ({err})') from err
        if not isinstance(data, dict):
            raise ValueError(f'{path}: expected a YAML mapping at the top level')
    for item in overrides:
        key, sep, raw = item.partition('=')
        if not sep:
            raise ValueError(f'override {item!r}: expected key=value')
        node = data
        *parents, leaf = key.split('.')
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return from_dict(cls, data, str(path or 'config'))


def to_dict(config: Any) -> dict[str, Any]:
    """Plain-data copy of a dataclass config (for logs and checkpoints)."""
    return dataclasses.asdict(config)
