"""One UNIV model file: backbone + heads in safetensors, with a JSON spec in its metadata.

Two forms: a full file (every tensor, fp32: what ``univ finetune`` writes), or a compact one
(~3-5 MB instead of ~90 MB, the shipped default model): fp16 heads, and a backbone rebuilt at
load, either from the embedded teacher plus the LoRA delta stored beside the heads
(``spec.lora`` set; merged once and cached by content), or from the weights ``spec.backbone``
names (``'default'``: the embedded teacher, ``univ weights``).
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from univ_core.models.perception import PerceptionModel, create_perception_model
from univ_core.train.checkpoint import save_safetensors

SPEC_KEY = 'univ_model'
DEFAULT_INPUT_SIZE = (336, 448)  # (H, W) model input of the default model and of finetune
LORA_PREFIX = 'lora.'  # compact files: the backbone's LoRA tensors under this prefix
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / 'weights' / 'default_model.safetensors'


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
    lora: dict | None = None  # compact file: LoraSettings of its 'lora.*' backbone delta
    backbone: str | None = None  # compact file: backbone weights rebuilt at load ('default')

    def __post_init__(self) -> None:
        self.input_size = tuple(self.input_size)
        if not (self.seg_classes or self.det_classes):
            raise ValueError('model spec: needs seg_classes or det_classes (a model with no head)')


def default_model_path() -> Path:
    """The shipped default model (``univ train-default`` reproduces it)."""
    return DEFAULT_MODEL


def build_model(spec: ModelSpec, weights: str = 'none') -> PerceptionModel:
    """An untrained PerceptionModel for ``spec`` (backbone from ``weights``)."""
    return create_perception_model(
        spec.arch, weights,
        num_seg_classes=len(spec.seg_classes) if spec.seg_classes else None,
        num_det_classes=len(spec.det_classes) if spec.det_classes else None,
        head_channels=spec.head_channels, **spec.backbone_overrides)


def save_model(path: Path, model: PerceptionModel, spec: ModelSpec,
               lora: dict[str, torch.Tensor] | None = None) -> Path:
    """Atomically write ``model`` and ``spec``: every tensor, or (``lora`` given) the compact form.

    Args:
        path: the .safetensors file.
        model: the model; its backbone must equal the teacher merged with ``lora``.
        spec: written as metadata (``spec.lora`` is set from ``lora`` by the caller).
        lora: the backbone's LoRA delta (names as ``univ pretrain`` saves them): heads are then
            stored in fp16 beside it and the backbone is not stored.
    """
    meta = {SPEC_KEY: json.dumps(asdict(spec))}
    if spec.backbone:  # the backbone comes from its named weights at load
        heads = {k: v.to(torch.float16) for k, v in model.head_state_dict().items()}
        return save_safetensors(Path(path), heads, meta)
    if lora is None:
        return save_safetensors(Path(path), model.state_dict(), meta)
    if not spec.lora:
        raise ValueError('save_model: a LoRA delta needs spec.lora (its LoraSettings)')
    tensors = {f'{LORA_PREFIX}{k}': v.to(torch.float16) for k, v in lora.items()}
    tensors |= {k: v.to(torch.float16) for k, v in model.head_state_dict().items()}
    return save_safetensors(Path(path), tensors, meta)


def read_spec(path: Path) -> ModelSpec:
    """The spec stored in a model file (no tensors read)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f'no UNIV model at {path}: `univ finetune` writes one, `univ train-default` '
            'rebuilds the shipped default model')
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
    model = build_model(spec, spec.backbone or 'none')
    state = {k: v.float() for k, v in load_state_dict_file(Path(path)).items()}
    if spec.backbone:
        model.load_head_state_dict(state)
    elif spec.lora:
        from univ_core.models.lora import LoraSettings
        from univ_core.models.univ_weights import merged_path

        lora = {k[len(LORA_PREFIX):]: v for k, v in state.items() if k.startswith(LORA_PREFIX)}
        merged = merged_path(lora, spec.arch, LoraSettings(**spec.lora))
        model.backbone.load_state_dict(load_state_dict_file(merged), strict=True)
        model.load_head_state_dict({k: v for k, v in state.items()
                                    if not k.startswith(LORA_PREFIX)})
    else:
        model.load_state_dict(state, strict=True)
    return model.eval(), spec
