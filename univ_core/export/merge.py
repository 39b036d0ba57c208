"""Merge a ``univ pretrain`` run's LoRA (``last.pt``) into a plain timm backbone safetensors."""

from pathlib import Path

import torch

from univ_core.models.lora import merge_lora
from univ_core.train.checkpoint import load_state, save_safetensors
from univ_core.train.config import from_dict
from univ_core.train.pretrain import PretrainConfig, build_models, load_lora_strict


def merge_pretrain_run(run_dir: Path, out: Path, tolerance: float = 1e-3,
                       seed: int = 0) -> float:
    """Rebuild the run's student from ``last.pt``, merge LoRA, verify, write atomically.

    Args:
        run_dir: a ``univ pretrain`` output folder (``last.pt`` holds LoRA tensors + config).
        out: the safetensors file to write (``timm.create_model(arch)`` loads it strictly).
        tolerance: largest max abs token difference merged vs unmerged accepted.
        seed: of the random verification images.

    Returns:
        Max abs difference of the patch tokens, merged vs unmerged, on two random images.
    """
    checkpoint = Path(run_dir) / 'last.pt'
    state = load_state(checkpoint)
    if 'lora' not in state or 'config' not in state:
        raise ValueError(f'{checkpoint}: not a univ pretrain checkpoint (no lora / config)')
    cfg = from_dict(PretrainConfig, state['config'], f'{checkpoint}:config')
    if cfg.weights == 'none':
        raise ValueError(f'{checkpoint}: the run started from random weights (weights: none), '
                         'which LoRA tensors alone cannot rebuild')
    _, student = build_models(cfg, torch.device('cpu'))
    load_lora_strict(student, state['lora'], str(checkpoint))
    student.eval()  # LoRA dropout off
    merged = merge_lora(student)
    images = torch.randn(2, 3, *cfg.img_size, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        diff = float((student(images) - merged(images)).abs().max())
    if diff > tolerance:
        raise ValueError(f'{checkpoint}: merged backbone differs from LoRA by {diff} > '
                         f'{tolerance}; not written')
    meta = {'format': 'univ-merged', 'arch': cfg.arch, 'step': str(state.get('step', '?')),
            'merge_max_abs_diff': f'{diff:.3g}'}
    save_safetensors(Path(out), merged.backbone.state_dict(), meta)
    return diff
