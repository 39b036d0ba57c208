"""One UNIV model file: backbone + heads in safetensors, with a JSON spec in its metadata."""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from safetensors import safe_open

from univ_core.models.perception import PerceptionModel, create_perception_model
from univ_core.models.weights import cache_dir
from univ_core.train.checkpoint import save_safetensors

SPEC_KEY = 'univ_model'


@dataclass
class ModelSpec:
    """What a model file holds besides tensors: enough to rebuild it with no other input."""

    arch: str  # timm backbone name
    seg_classes: list[str] | None  # segmentation class names (None: no seg head)
    det_classes: list[str] | None  # detection class names (None: no det head)
    input_size: tuple[int, int]  # (H, W) the model was trained at (multiples of the patch)
    head_channels: int = 256  # width of pyramid and heads
    backbone_overrides: dict = field(default_factory=dict)  # extra timm args (toy models)
    palette: list[list[int]] | None = None  # RGB colour per seg class (None: a default one)

    def __post_init__(self) -> None:
        self.input_size = tuple(self.input_size)
        if not (self.seg_classes or self.det_classes):
            raise ValueError('model spec: needs seg_classes or det_classes (a model with no head)')


def default_model_path() -> Path:
    """Where ``univ demo`` leaves the default model (detection head trained on the demo data)."""
    return cache_dir() / 'default_model.safetensors'


def build_model(spec: ModelSpec, weights: str = 'none') -> PerceptionModel:
    """An untrained PerceptionModel for ``spec`` (backbone from ``weights``)."""
    return create_perception_model(
        spec.arch, weights,
        num_seg_classes=len(spec.seg_classes) if spec.seg_classes else None,
        num_det_classes=len(spec.det_classes) if spec.det_classes else None,
        head_channels=spec.head_channels, **spec.backbone_overrides)


def save_model(path: Path, model: PerceptionModel, spec: ModelSpec) -> Path:
    """Atomically write all of ``model``'s tensors and ``spec``."""
    return save_safetensors(Path(path), model.state_dict(), {SPEC_KEY: json.dumps(asdict(spec))})


def read_spec(path: Path) -> ModelSpec:
    """The spec stored in a model file (no tensors read)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f'no UNIV model at {path}: run `univ demo` (trains the default detection head) '
            'or `univ finetune`, or pass a model file')
    try:
        with safe_open(str(path), 'pt') as f:
            meta = f.metadata() or {}
    except Exception as err:
        raise ValueError(f'{path}: not a safetensors file ({err})') from err
    if SPEC_KEY not in meta:
        raise ValueError(f'{path}: safetensors without a UNIV model spec (a bare backbone?)')
    return ModelSpec(**json.loads(meta[SPEC_KEY]))


def load_model(path: Path) -> tuple[PerceptionModel, ModelSpec]:
    """Rebuild the model from its file (strict: every tensor must match the spec)."""
    from univ_core.models.weights import load_state_dict_file

    spec = read_spec(path)
    model = build_model(spec)
    model.load_state_dict(load_state_dict_file(Path(path)), strict=True)
    return model.eval(), spec
