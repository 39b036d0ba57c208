"""The official UNIV release checkpoint -> a plain timm state dict (``univ weights --release``).

fangyuanmao/UNIV ``pretrain_mcmae.py`` saves ``{'student', 'teacher', 'optimizer', 'epoch',
'args' (argparse.Namespace), 'cross_modality_loss_fn'[, 'fp16_scaler']}``; its student is
``deepcopy(student.module).merge_and_unload().state_dict()``: the ConvMAE's own keys with the
LoRA already merged. Also read here, in case a file was saved otherwise: a DDP ``module.``
prefix, peft's ``base_model.model.`` prefix, and unmerged peft LoRA tensors
(``X.base_layer.weight``, ``X.lora_A.default.weight``, ``X.lora_B.default.weight``), merged
with peft at ``alpha / r`` (the file does not hold alpha: the official config's 32 by default).
"""

import argparse
import pickle
from pathlib import Path

import torch
from torch import nn

from univ_core.models import convmae
from univ_core.models.backbone import PatchEncoder, create_backbone
from univ_core.models.lora import LoraSettings, add_lora, merge_lora, state_mismatch
from univ_core.models.weights import cache_dir
from univ_core.train.checkpoint import save_safetensors

RELEASE_ARCHS = ('convmae_base', 'vit_small_patch14_dinov2')
RELEASE_ENTRY = 'student'  # the adapted (IR + RGB) encoder; 'teacher' is the frozen ConvMAE
PREFIXES = ('module.', 'base_model.model.')  # DDP, then peft's PeftModel/LoraModel wrappers
LORA_A = '.lora_A.default.weight'
STUDENT_PREFIX = 'base_model.model.backbone.'  # our LoRA student: peft around a PatchEncoder


def read_release_student(path: Path) -> dict[str, torch.Tensor]:
    """The student state dict of a release file, ``module.`` / ``base_model.model.`` removed.

    Loaded with ``weights_only=True``; only ``argparse.Namespace`` (the run's ``args``) is
    allowed beyond tensors and containers, so no code in the file runs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{path}: UNIV release checkpoint not found')
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            payload = torch.load(path, map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:  # OSError: cut zip
        raise ValueError(f'{path}: not a UNIV release checkpoint loadable with weights_only=True '
                         f'({error})') from error
    student = payload.get(RELEASE_ENTRY) if isinstance(payload, dict) else None
    if not isinstance(student, dict) or not student:
        found = sorted(payload)[:8] if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f'{path}: no {RELEASE_ENTRY!r} state dict (official UNIV format: '
                         f'student, teacher, args, ...); found {found}')
    return {_strip(key): value for key, value in student.items()}


def _strip(key: str) -> str:
    """``key`` without the wrapper prefixes of :data:`PREFIXES`, in their order."""
    for prefix in PREFIXES:
        key = key.removeprefix(prefix)
    return key


def _load_exactly(model: nn.Module, state: dict[str, torch.Tensor], path: Path, arch: str) -> None:
    """Load ``state`` into ``model`` strictly; keys, then shapes, checked first to name them."""
    missing, unexpected, wrong = state_mismatch(model.state_dict(), state)
    if missing or unexpected:
        raise ValueError(f'{path}: student is not a {arch} state dict: missing {missing[:5]}, '
                         f'unexpected {unexpected[:5]}')
    if wrong:
        raise ValueError(f'{path}: student of another {arch} size (file != model): {wrong[:3]}')
    model.load_state_dict(state, strict=True)


def _lora_settings(state: dict[str, torch.Tensor], path: Path, alpha: int) -> LoraSettings:
    """LoRA settings of unmerged peft tensors: their modules, rank from lora_A, given alpha."""
    modules = sorted(k.removesuffix(LORA_A) for k in state if k.endswith(LORA_A))
    ranks = {state[m + LORA_A].shape[0] for m in modules}
    if len(ranks) != 1:
        raise ValueError(f'{path}: LoRA tensors of several ranks {sorted(ranks)}: unsupported')
    targets = tuple(f'backbone.{m}' for m in modules)  # exact module names under PatchEncoder
    return LoraSettings(r=ranks.pop(), alpha=alpha, dropout=0.0, target_modules=targets)


def release_state_dict(path: Path, arch: str = 'convmae_base', alpha: int = 32,
                       **overrides: object) -> dict[str, torch.Tensor]:
    """The release's student as a state dict that ``timm.create_model(arch)`` loads strictly.

    Args:
        path: the official checkpoint (``torch.save`` of a dict with ``'student'``).
        arch: timm name of the student (:data:`RELEASE_ARCHS`).
        alpha: LoRA alpha, used only for unmerged LoRA tensors (update scale alpha / r).
        **overrides: ``timm.create_model`` arguments (tests use tiny models).

    Returns:
        name -> float tensor, LoRA merged, MAE decoder and fixed pos_embed dropped (ConvMAE).

    Raises:
        FileNotFoundError: no file; ValueError: no student, or it does not fit ``arch``.
    """
    path = Path(path)
    state = read_release_student(path)
    if arch.startswith('convmae'):  # blocks3 -> blocks; decoder, skip projections dropped
        state = convmae.checked_convmae_state(state, path)
    backbone = create_backbone(arch, 'none', **overrides)
    if not any(k.endswith(LORA_A) for k in state):  # the official format: merged already
        _load_exactly(backbone, state, path, arch)
        return backbone.state_dict()
    student = add_lora(PatchEncoder(backbone), _lora_settings(state, path, alpha), arch)
    _load_exactly(student, {STUDENT_PREFIX + k: v for k, v in state.items()}, path, arch)
    return merge_lora(student.eval()).backbone.state_dict()


def add_release_arguments(parser: argparse.ArgumentParser) -> None:
    """``univ weights`` flags converting an official release checkpoint."""
    parser.add_argument('--release', type=Path, metavar='CKPT',
                        help="official UNIV checkpoint ({'student', 'teacher', 'args'})")
    parser.add_argument('--arch', choices=RELEASE_ARCHS,
                        help=f'timm arch of the release student (with --release; default '
                        f'{RELEASE_ARCHS[0]})')
    parser.add_argument('--out', type=Path, help='output safetensors (with --release; default: '
                        'UNIV_CACHE/<arch>.univ_release.safetensors)')


def release_main(args: argparse.Namespace) -> int:
    """Convert ``args.release`` and write it atomically as safetensors; prints the path."""
    if args.release is None:
        raise ValueError('--arch and --out go with --release CKPT')
    arch = args.arch or RELEASE_ARCHS[0]
    out = args.out or cache_dir() / f'{arch}.univ_release.safetensors'
    state = release_state_dict(args.release, arch)
    save_safetensors(out, state, {'format': 'univ-release', 'arch': arch})
    print(f'{args.release} (student) -> {out}: {arch}, '
          f'{sum(t.numel() for t in state.values()):,} parameters')
    return 0
