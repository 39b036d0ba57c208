"""The UNIV backbone = the embedded teacher + a PCCL-trained LoRA adapter, merged with peft.

The repository ships only the adapter (``univ_core/weights/univ_lora.safetensors``: fp16 LoRA
tensors, ~1.2 MB, with a sidecar JSON saying how it was trained and measured). The merged
backbone (a plain timm state dict, ~88 MB) is built once from ``univ weights`` + the adapter and
cached under a name holding the adapter's sha256, so a new adapter never reuses a stale merge.
``weights: univ`` selects it wherever a backbone is built (pretrain, finetune, model files).
"""

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from univ_core.models.lora import LoraSettings, add_lora, load_lora_strict, merge_lora
from univ_core.models.weights import (
    DEFAULT_ARCH,
    cache_dir,
    ensure_default_weights,
    file_sha256,
)
from univ_core.train.checkpoint import save_safetensors, write_json

UNIV_ADAPTER = Path(__file__).resolve().parents[1] / 'weights' / 'univ_lora.safetensors'
LORA_META = 'univ_lora'  # safetensors metadata key: JSON {arch, lora settings, step}


def save_lora(path: Path, lora: dict[str, torch.Tensor], arch: str, settings: LoraSettings,
              extra: dict | None = None) -> Path:
    """Atomically write LoRA tensors as fp16 safetensors with their settings in the metadata."""
    settings = settings.for_arch(arch)
    meta = {'arch': arch, 'lora': {'r': settings.r, 'alpha': settings.alpha,
                                   'dropout': settings.dropout,
                                   'target_modules': list(settings.target_modules)},
            **(extra or {})}
    tensors = {k: v.detach().to(torch.float16) for k, v in lora.items()}
    return save_safetensors(Path(path), tensors, {LORA_META: json.dumps(meta)})


def read_lora(path: Path) -> tuple[dict[str, torch.Tensor], str, LoraSettings, dict]:
    """(fp32 LoRA tensors, arch, settings, metadata) of a :func:`save_lora` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'LoRA adapter {path} not found')
    try:
        with safe_open(str(path), 'pt') as f:
            meta = json.loads((f.metadata() or {}).get(LORA_META, 'null') or 'null')
            tensors = {k: f.get_tensor(k).float() for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f'{path}: not a readable safetensors file ({error})') from error
    if not meta:
        raise ValueError(f'{path}: not a UNIV LoRA adapter (no {LORA_META} metadata)')
    return tensors, meta['arch'], LoraSettings(**meta['lora']), meta


def merge_lora_tensors(lora: dict[str, torch.Tensor], arch: str,
                       settings: LoraSettings) -> dict[str, torch.Tensor]:
    """The teacher's weights with ``lora`` merged (peft ``merge_and_unload``): a timm state dict.

    ``lora`` must hold exactly the LoRA tensors of a student built with ``settings`` (names as
    ``univ pretrain`` saves them).
    """
    from univ_core.models.backbone import PatchEncoder, create_backbone

    if arch.split('.')[0] != DEFAULT_ARCH:
        raise ValueError(f'LoRA adapters merge into the embedded {DEFAULT_ARCH}, got {arch!r}')
    student = add_lora(PatchEncoder(create_backbone(arch, 'default')), settings, arch)
    load_lora_strict(student, lora, 'LoRA adapter')
    return merge_lora(student.eval()).backbone.state_dict()


def _content_key(lora: dict[str, torch.Tensor], arch: str, settings: LoraSettings) -> str:
    """sha256 of what the merge depends on: arch, settings (alpha scales it), fp16 tensors.

    The tensors as fp16 (what a shipped file holds), names included.
    """
    import hashlib

    digest = hashlib.sha256(json.dumps([arch, vars(settings)], sort_keys=True,
                                       default=list).encode())
    for name in sorted(lora):
        digest.update(name.encode())
        digest.update(lora[name].detach().to(torch.float16).contiguous().numpy().tobytes())
    return digest.hexdigest()


def merged_path(lora: dict[str, torch.Tensor], arch: str, settings: LoraSettings) -> Path:
    """The cached merged backbone of these LoRA tensors (built once, keyed by their content).

    The cache file's own sha256 is checked against its record on every use: a damaged or
    foreign file is rebuilt, never trusted.
    """
    key = _content_key(lora, arch, settings)
    path = cache_dir() / f'univ_backbone.{key[:16]}.safetensors'
    record = path.with_suffix('.json')
    if path.is_file() and record.is_file():
        try:
            known = json.loads(record.read_text())
        except ValueError:
            known = {}
        if known.get('lora_sha256') == key and known.get('sha256') == file_sha256(path):
            return path
    state = merge_lora_tensors(lora, arch, settings)
    save_safetensors(path, state, {'format': 'univ-merged', 'arch': arch})
    write_json(record, {'lora_sha256': key, 'sha256': file_sha256(path), 'arch': arch,
                        'teacher_sha256': file_sha256(ensure_default_weights()),
                        'lora': vars(settings) | {'target_modules':
                                                  list(settings.target_modules)}})
    return path


def ensure_merged(lora_file: Path = UNIV_ADAPTER) -> Path:
    """The merged UNIV backbone of an adapter file (default: the shipped one), cached."""
    lora, arch, settings, _ = read_lora(lora_file)
    return merged_path(lora, arch, settings)
