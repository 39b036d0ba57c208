"""A ``univ pretrain`` run's LoRA: merged into a plain timm backbone, or saved as an adapter.

Both verify that the merged backbone gives the unmerged student's tokens (max abs difference
on random images, in float64: :func:`float64_difference`) before writing anything.
"""

import copy
import json
from pathlib import Path

import torch
from safetensors import safe_open

from univ_core.models.lora import load_lora_strict, lora_state, merge_lora
from univ_core.models.weights import file_sha256, load_state_dict_file
from univ_core.train.checkpoint import load_state, save_safetensors, write_json
from univ_core.train.config import from_dict, to_dict
from univ_core.train.pretrain import PretrainConfig, build_models

MERGE_TOLERANCE = 1e-4  # max abs token difference, merged vs unmerged, in float64


def run_student(run_dir: Path, snapshot: Path | None = None):
    """(config, step, LoRA student in eval mode) of a run: from last.pt or a LoRA snapshot."""
    checkpoint = Path(run_dir) / 'last.pt'
    state = load_state(checkpoint)
    if 'lora' not in state or 'config' not in state:
        raise ValueError(f'{checkpoint}: not a univ pretrain checkpoint (no lora / config)')
    cfg = from_dict(PretrainConfig, state['config'], f'{checkpoint}:config')
    if cfg.weights == 'none':
        raise ValueError(f'{checkpoint}: the run started from random weights (weights: none), '
                         'which LoRA tensors alone cannot rebuild')
    lora, step = state['lora'], state.get('step', '?')
    if snapshot is not None:
        lora = load_state_dict_file(snapshot)
        with safe_open(str(snapshot), 'pt') as f:
            meta = f.metadata() or {}
        step = int(meta['step']) if 'step' in meta else step  # metadata holds strings
    _, student = build_models(cfg, torch.device('cpu'))
    load_lora_strict(student, lora, str(snapshot or checkpoint))
    return cfg, step, student.eval()  # eval: LoRA dropout off


def float64_difference(a: torch.nn.Module, b: torch.nn.Module, images: torch.Tensor) -> float:
    """Max abs output difference of two models, both run in float64 from their weights as stored.

    This measures what a merge changed (the merged weights keep their fp32 rounding) and not
    fp32 arithmetic: summation order alone moves DINOv2 ViT-S tokens (up to |45| on real
    images) by ~1e-4 in fp32, in the unmerged student as much as in the merged backbone
    (README "Pre-training"; ``tools/merge_precision.py`` prints both).

    Args:
        a: a model in eval mode (copied, not changed).
        b: the model to compare with ``a`` (same).
        images: (B, 3, H, W) inputs.
    """
    with torch.inference_mode():
        x = images.double()
        return float((copy.deepcopy(a).double()(x) - copy.deepcopy(b).double()(x)).abs().max())


def merge_difference(student, merged, size: tuple[int, int], seed: int = 0) -> float:
    """Max abs patch-token difference, merged vs unmerged, on two random images (float64)."""
    images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(seed))
    return float64_difference(student, merged, images)


def export_adapter(run_dir: Path, out: Path, snapshot: Path | None = None,
                   tolerance: float = MERGE_TOLERANCE) -> dict:
    """Write the run's LoRA as an fp16 adapter (``univ_weights.save_lora``) + sidecar JSON.

    The fp16 tensors are what is verified: merged (teacher + fp16 delta) vs unmerged student
    with the same fp16 delta.

    Returns:
        The sidecar record (command, run, data, steps, sha256, merge difference).
    """
    import sys

    from univ_core.models.univ_weights import save_lora
    from univ_core.train.default_model import git_commit

    cfg, step, student = run_student(run_dir, snapshot)
    if cfg.weights != 'default':  # an adapter is always merged into the embedded teacher
        raise ValueError(f'{run_dir}: pre-trained from weights {cfg.weights!r}; a LoRA adapter '
                         'applies to the embedded teacher only (weights: default). Export the '
                         'merged backbone instead (--format safetensors)')
    half = {n: p.detach().half().float() for n, p in lora_state(student).items()}
    load_lora_strict(student, half, 'fp16 adapter')
    diff = merge_difference(student, merge_lora(student), cfg.img_size)
    if diff > tolerance:
        raise ValueError(f'{run_dir}: merged adapter differs from the student by {diff} > '
                         f'{tolerance}; not written')
    save_lora(out, half, cfg.arch, cfg.lora, {'step': str(step)})
    pairs = json.loads((Path(run_dir) / 'pairs.json').read_text())
    record = {
        'file': Path(out).name, 'sha256': file_sha256(out),
        'command': 'univ ' + ' '.join(sys.argv[1:]), 'commit': git_commit(),
        'run': str(run_dir), 'step': step, 'config': to_dict(cfg),
        'data': {'sources': [s.root for s in cfg.sources], 'train_pairs': len(pairs['train']),
                 'heldout_pairs': [Path(rgb).stem for rgb, _ in pairs['heldout']],
                 'excluded_pairs': list(cfg.exclude)},
        'lora_parameters': sum(t.numel() for t in half.values()),
        'merge_max_abs_diff': diff,
    }
    write_json(Path(out).with_suffix('.json'), record)
    return record


def merge_pretrain_run(run_dir: Path, out: Path, tolerance: float = MERGE_TOLERANCE,
                       seed: int = 0, snapshot: Path | None = None) -> float:
    """Rebuild the run's student from ``last.pt``, merge LoRA, verify, write atomically.

    Args:
        run_dir: a ``univ pretrain`` output folder (``last.pt`` holds LoRA tensors + config).
        out: the safetensors file to write (``timm.create_model(arch)`` loads it strictly).
        tolerance: largest max abs token difference merged vs unmerged accepted (float64).
        seed: of the random verification images.
        snapshot: a ``lora_stepNNNNN.safetensors`` of the run to merge instead of ``last.pt``'s.

    Returns:
        Max abs difference of the patch tokens, merged vs unmerged, on two random images
        (float64).
    """
    cfg, step, student = run_student(run_dir, snapshot)
    merged = merge_lora(student)
    diff = merge_difference(student, merged, cfg.img_size, seed)
    if diff > tolerance:
        raise ValueError(f'{run_dir}: merged backbone differs from LoRA by {diff} > '
                         f'{tolerance}; not written')
    meta = {'format': 'univ-merged', 'arch': cfg.arch, 'step': str(step),
            'merge_max_abs_diff': f'{diff:.3g}'}
    save_safetensors(Path(out), merged.backbone.state_dict(), meta)
    return diff
