"""Defaults of ``PredictorConfig`` and ``ThermalNorm``, read without importing torch.

The node's parameters that mirror ``univ_core.inference.PredictorConfig`` / ``ThermalNorm``
fields take their defaults from those dataclasses: one home for each default. Importing them
imports torch (seconds, 15 s on a loaded machine), which ``perception_node --help`` and the
parameter declaration of a lifecycle node must not wait for. So the defaults are read from the
dataclass definitions in the source files with :mod:`ast`: the literal default of each annotated
field. ``test/test_params.py`` checks the result against the imported dataclasses.
"""

import ast
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

NOT_LITERAL = object()  # a field whose default is not a literal (e.g. field(default_factory=...))


def _source(relative: str) -> Path:
    """``univ_core/<relative>`` without importing univ_core (find_spec only locates it)."""
    spec = find_spec('univ_core')
    if spec is None or spec.origin is None:
        raise ImportError('univ_core is not installed (pip install -e . in the repository)')
    return Path(spec.origin).parent / relative


@cache
def dataclass_defaults(relative: str, class_name: str) -> dict[str, Any]:
    """Field name -> literal default of dataclass ``class_name`` in ``univ_core/<relative>``.

    Fields without a default are left out; a non-literal default maps to :data:`NOT_LITERAL`.

    Raises:
        LookupError: no such class in the file.
    """
    tree = ast.parse(_source(relative).read_text(), filename=relative)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            break
    else:
        raise LookupError(f'no class {class_name} in univ_core/{relative}')
    defaults: dict[str, Any] = {}
    for statement in node.body:
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                and statement.value is not None):
            continue
        try:
            defaults[statement.target.id] = ast.literal_eval(statement.value)
        except ValueError:
            defaults[statement.target.id] = NOT_LITERAL
    return defaults


def predictor_default(name: str) -> Any:
    """Default of ``PredictorConfig.<name>``, or of ``ThermalNorm.<x>`` for 'thermal_norm.<x>'.

    Raises:
        KeyError: no such field, or its default is not a literal.
    """
    if name.startswith('thermal_norm.'):
        relative, cls, field = 'data/thermal.py', 'ThermalNorm', name.split('.', 1)[1]
    else:
        relative, cls, field = 'inference/config.py', 'PredictorConfig', name
    value = dataclass_defaults(relative, cls).get(field, NOT_LITERAL)
    if value is NOT_LITERAL:
        raise KeyError(f'{cls}.{field}: no such field with a literal default in '
                       f'univ_core/{relative}')
    return value
