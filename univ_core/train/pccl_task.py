"""One PCCL pre-training step's losses: teacher labels, student IR + RGB tokens, two BCE terms."""

import torch
import torch.nn.functional as F

from univ_core.losses.pccl import PCCLLoss, attention_positives
from univ_core.models.backbone import PatchEncoder, tokens_and_last_attention


def pccl_losses(
    student: torch.nn.Module,
    teacher: PatchEncoder,
    rgb: torch.Tensor,
    ir: torch.Tensor,
    loss_fn: PCCLLoss,
    gamma: float = 0.6,
    ir_weight: float = 1.0,
    rgb_weight: float = 1.0,
    anchor_weight: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Named losses for one batch of aligned pairs.

    Args:
        student: teacher weights + LoRA, ``forward(images) -> (B, N, D)`` patch tokens (may be
            wrapped in DDP: it must be called through its forward).
        teacher: frozen RGB teacher (never updated, eval mode).
        rgb: (B, 3, H, W) float32 ImageNet-normalised RGB.
        ir: (B, 3, H, W) float32 IR (one channel replicated, normalised 0.5338 / 0.2519).
        loss_fn: the PCCL loss.
        gamma: attention mass kept as positives.
        ir_weight: alpha, weight of the cross-modal IR term.
        rgb_weight: beta, weight of the synchronous RGB distillation term.
        anchor_weight: weight of ``1 - cos(student RGB token i, teacher RGB token i)`` (not in
            the official code, default 0): keeps the student's RGB tokens where the teacher's
            are, which the BCE terms alone do not (their negatives push every token away from
            the teacher's shared direction).

    Returns:
        ``{'loss', 'loss_ir', 'loss_rgb', 'positives_per_row'}`` (scalars).
    """
    teacher_tokens, attention = tokens_and_last_attention(teacher, rgb)  # (B,N,D), (B,N,N)
    labels = attention_positives(attention, gamma)
    tokens = student(torch.cat([rgb, ir], dim=0))  # one forward for both modalities: (2B, N, D)
    rgb_tokens, ir_tokens = tokens.chunk(2, dim=0)  # (B, N, D) each
    loss_ir = loss_fn(ir_tokens, teacher_tokens, labels)
    loss_rgb = loss_fn(rgb_tokens, teacher_tokens, labels)
    loss = ir_weight * loss_ir + rgb_weight * loss_rgb
    with torch.set_grad_enabled(torch.is_grad_enabled() and anchor_weight != 0):  # off: log only
        cosine = F.cosine_similarity(rgb_tokens.float(), teacher_tokens.float(), dim=-1)  # (B,N)
        loss_anchor = 1 - cosine.mean()
    if anchor_weight:
        loss = loss + anchor_weight * loss_anchor
    return {
        'loss': loss,
        'loss_ir': loss_ir.detach(),
        'loss_rgb': loss_rgb.detach(),
        'loss_anchor': loss_anchor.detach(),
        'positives_per_row': labels.sum(-1).mean(),
    }
