"""PCCL: patch cross-modal contrastive loss with attention-derived pseudo labels (UNIV)."""

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def attention_positives(attention: torch.Tensor, gamma: float = 0.6) -> torch.Tensor:
    """Positive-pair labels from the teacher's attention.

    For each query row, keys are sorted by attention (descending) and the longest prefix whose
    cumulative mass stays <= ``gamma`` is positive; every other patch is negative. The key that
    crosses ``gamma`` is therefore excluded, and a row whose top-1 weight already exceeds
    ``gamma`` has no positive at all (as in the official code).

    Args:
        attention: (B, N, N) float, rows summing to 1 (head-averaged, patches only).
        gamma: cumulative attention mass kept as positives.

    Returns:
        (B, N, N) float32 of 0/1, ``labels[b, i, j] = 1`` if patch j is a positive of i.
    """
    values, order = attention.sort(dim=-1, descending=True)  # (B, N, N) each
    keep = values.cumsum(dim=-1) <= gamma
    keep = keep.cummin(dim=-1).values  # a prefix of the sorted order, never a gap
    labels = torch.zeros_like(attention, dtype=torch.float32)
    return labels.scatter_(-1, order, keep.float())


class PCCLLoss(nn.Module):
    """Per-pair sigmoid BCE between scaled cosine similarities and 0/1 labels.

    ``logits[b, i, j] = cos(student[b, i], teacher[b, j]) / temperature``; the loss is
    ``BCEWithLogits(logits, labels)`` averaged over B x N x N. (The official code also averages
    the same loss on the transposed logits and labels, which is the identical mean.)

    ``center=True`` (not in the official code) subtracts each image's mean token from the
    student and the teacher tokens before the cosine. DINOv2's patch tokens share one direction
    (mean cosine ~0.6 between patches), so without it the cheapest way to push the hundreds of
    negatives per row below cosine 0 is to turn every student token away from that shared
    direction, which sends the RGB tokens far from the teacher's. A shared offset is invisible to
    the centred loss, which then only ranks patches against each other.
    """

    def __init__(self, temperature: float = 0.04, eps: float = 1e-6,
                 center: bool = False) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        self.temperature = temperature
        self.eps = eps
        self.center = center

    def forward(
        self, student_tokens: torch.Tensor, teacher_tokens: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Loss of student tokens against teacher tokens.

        Args:
            student_tokens: (B, N, D) student patch tokens (IR, or RGB for distillation).
            teacher_tokens: (B, N, D) frozen teacher RGB patch tokens.
            labels: (B, N, N) 0/1 from :func:`attention_positives`.

        Returns:
            Scalar loss (float32).
        """
        if student_tokens.shape != teacher_tokens.shape:
            raise ValueError(
                f'student_tokens {tuple(student_tokens.shape)} != teacher_tokens '
                f'{tuple(teacher_tokens.shape)}: both must be (B, N, D) on the same patch grid')
        s, t = student_tokens.float(), teacher_tokens.float()
        if self.center:  # (B, 1, D) per-image mean token removed
            s, t = s - s.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
        s = F.normalize(s, dim=-1, eps=self.eps)
        t = F.normalize(t, dim=-1, eps=self.eps)
        logits = s @ t.transpose(1, 2) / self.temperature  # (B, N, N)
        return F.binary_cross_entropy_with_logits(logits, labels)
