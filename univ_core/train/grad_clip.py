"""Gradient clipping as the official UNIV code (DINO's ``clip_gradients``), or by one norm."""

import torch

CLIP_MODES = ('param', 'global')  # per parameter (official) or one norm over all of them


def clip_gradients(params: list[torch.nn.Parameter], max_norm: float, mode: str) -> None:
    """Clip the gradients of ``params`` in place.

    'param': each gradient g becomes g * min(1, max_norm / (||g|| + 1e-6)) on its own, as
    UNIV's ``utils.clip_gradients``; 'global': all by one such factor, ||g|| the norm of their
    concatenation (``torch.nn.utils.clip_grad_norm_``). Parameters without a gradient are skipped.
    """
    if mode not in CLIP_MODES:
        raise ValueError(f'clip mode: expected one of {CLIP_MODES}, got {mode!r}')
    if mode == 'global':
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return
    for p in params:
        if p.grad is not None:
            torch.nn.utils.clip_grad_norm_(p, max_norm)
