"""ConvMAE-B, the UNIV teacher, as the timm model ``convmae_base``.

A hybrid encoder: two convolutional stages (stride 4 and 8) of ``ConvBlock``s whose "attention"
is a 5x5 depthwise convolution, then a stride-16 stage of timm ViT ``Block``s with a fixed 2-D
sin-cos position embedding and no CLS token. It follows the encoder of the official code
(fangyuanmao/UNIV ``models/backbone/mcmae``, from Alpha-VL/ConvMAE) run with ``mask_ratio=0``,
as UNIV runs it. Left out: the MAE decoder and the stage-1/2 skip projections
(``stage1_output_decode``, ``stage2_output_decode``): original ConvMAE adds them to the stage-3
tokens, UNIV computes them but never adds them (``# x = x + stage1_embed + stage2_embed``).

Checkpoint keys are the official ones except ``blocks3.*``, here ``blocks.*``
(``convert_convmae_checkpoint``).
"""

import argparse
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from math import prod
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import (
    ConvMlp,
    DropPath,
    LayerNorm2d,
    PatchEmbed,
    build_sincos2d_pos_embed,
    calculate_drop_path_rates,
    to_2tuple,
    trunc_normal_,
)
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models.vision_transformer import Block
from torch import nn

DROPPED_KEYS = ('mask_token', 'pos_embed')  # MAE mask token; fixed sin-cos table (recomputed)
DROPPED_PREFIXES = ('decoder_', 'stage1_output_decode.', 'stage2_output_decode.')
CHECKPOINT_ENTRY = 'model'  # the official checkpoints hold the state dict under this key
CONV_NORM = partial(LayerNorm2d, eps=1e-5)  # official stage-1/2 norms: nn.LayerNorm defaults
TOKEN_NORM = partial(nn.LayerNorm, eps=1e-6)  # official stage-3 and final norm


@dataclass(frozen=True)
class PatchGeometry:
    """What timm-style callers read from ``model.patch_embed`` (ConvMAE has three embeddings)."""

    patch_size: tuple[int, int]  # total stride of the three patch embeddings, pixels
    img_size: tuple[int, int]  # nominal input size (any multiple of ``patch_size`` works)
    grid_size: tuple[int, int]  # token grid of the nominal input


class ConvStageEmbed(PatchEmbed):
    """Official ``PatchEmbed``: strided conv, channel LayerNorm (eps 1e-5), GELU; NCHW in/out."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__(img_size=None, patch_size=patch_size, in_chans=in_chans,
                         embed_dim=embed_dim, norm_layer=CONV_NORM, output_fmt='NCHW')
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, H, W) float32. Returns (B, D, H/p, W/p)."""
        return self.act(super().forward(x))


class ConvBlock(nn.Module):
    """Official ``CBlock``: x + conv2(dwconv5x5(conv1(LN(x)))), then x + ConvMlp(LN(x))."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 act_layer: type[nn.Module] = nn.GELU, kernel_size: int = 5) -> None:
        super().__init__()
        self.norm1 = CONV_NORM(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.attn = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = CONV_NORM(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), act_layer=act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, H, W) float32. Returns (B, C, H, W)."""
        x = x + self.drop_path(self.conv2(self.attn(self.conv1(self.norm1(x)))))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def sincos_pos_embed(grid: tuple[int, int], dim: int) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos position table for a (rows, cols) token grid.

    Returns:
        (rows * cols, dim) float32, rows in row-major token order; channels are
        [sin x, cos x, sin y, cos y] (x = column, y = row), as MAE's ``get_2d_sincos_pos_embed``.
    """
    table = build_sincos2d_pos_embed(list(grid), dim, interleave_sin_cos=True)  # [y | x] halves
    row_half, col_half = table.chunk(2, dim=1)
    return torch.cat([col_half, row_half], dim=1)  # (N, dim): column half first, as MAE


class ConvMAE(nn.Module):
    """ConvMAE encoder with timm's ViT interface (``forward_features``, ``blocks``, ``norm``).

    Args:
        img_size: nominal input size (reported by ``patch_embed``; any multiple of 16 works).
        in_chans: input channels.
        num_classes: classifier outputs on mean-pooled tokens; 0 for none.
        embed_dims: widths of stages 1, 2 and 3.
        depths: blocks per stage.
        num_heads: attention heads of stage 3.
        mlp_ratio: MLP hidden width / block width, all stages.
        patch_sizes: strides of the three patch embeddings.
        qkv_bias: bias on the stage-3 qkv projection.
        drop_path_rate: stochastic depth, rising linearly over all blocks.
        norm_layer: stage-3 and final norm (officially LayerNorm with eps 1e-6).
        act_layer: MLP activation.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        num_classes: int = 0,
        embed_dims: tuple[int, int, int] = (256, 384, 768),
        depths: tuple[int, int, int] = (2, 2, 11),
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        patch_sizes: tuple[int, int, int] = (4, 2, 2),
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = TOKEN_NORM,
        act_layer: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        _check_config(embed_dims, depths, patch_sizes, num_heads)
        dim1, dim2, dim3 = embed_dims
        stride = prod(patch_sizes)
        img_size = to_2tuple(img_size)
        self.patch_embed = PatchGeometry(
            (stride, stride), img_size, (img_size[0] // stride, img_size[1] // stride))
        self.feature_info = [  # timm convention: the maps forward_stages returns
            {'num_chs': embed_dims[i], 'reduction': prod(patch_sizes[:i + 1]),
             'module': ('blocks1', 'blocks2', 'norm')[i]} for i in range(3)]
        self.num_prefix_tokens = 0
        self.num_classes = num_classes
        self.embed_dim = self.num_features = dim3
        self.grad_checkpointing = False
        self._pos_cache: dict[tuple, torch.Tensor] = {}
        rates = iter(calculate_drop_path_rates(drop_path_rate, sum(depths)))  # rising per block
        self.patch_embed1 = ConvStageEmbed(patch_sizes[0], in_chans, dim1)
        self.blocks1 = nn.Sequential(
            *[ConvBlock(dim1, mlp_ratio, next(rates), act_layer) for _ in range(depths[0])])
        self.patch_embed2 = ConvStageEmbed(patch_sizes[1], dim1, dim2)
        self.blocks2 = nn.Sequential(
            *[ConvBlock(dim2, mlp_ratio, next(rates), act_layer) for _ in range(depths[1])])
        self.patch_embed3 = ConvStageEmbed(patch_sizes[2], dim2, dim3)
        self.patch_embed4 = nn.Linear(dim3, dim3)
        self.blocks = nn.Sequential(*[
            Block(dim3, num_heads, mlp_ratio, qkv_bias=qkv_bias, drop_path=next(rates),
                  norm_layer=norm_layer, act_layer=act_layer)
            for _ in range(depths[2])
        ])
        self.norm = norm_layer(dim3)
        self.head = nn.Linear(dim3, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_linear)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute stage-3 activations in backward (timm convention)."""
        self.grad_checkpointing = enable

    def position_table(self, grid: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        """Sin-cos table (1, rows * cols, D) on ``like``'s device and dtype, cached per grid."""
        key = (grid, like.device, like.dtype)
        if key not in self._pos_cache:
            with torch.inference_mode(False):  # a normal tensor, usable later with autograd
                table = sincos_pos_embed(grid, self.embed_dim).to(like.device, like.dtype)
            self._pos_cache[key] = table.unsqueeze(0)  # (1, N, D)
        return self._pos_cache[key]

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stage maps for a feature pyramid.

        Args:
            x: (B, C, H, W) float32 normalised images, H and W multiples of 16.

        Returns:
            (B, C1, H/4, W/4), (B, C2, H/8, W/8) and (B, D, H/16, W/16); the last is the
            post-norm stage-3 tokens (those UNIV aligns), unflattened.
        """
        stage1, stage2, tokens, grid = self._encode(x)
        stage3 = tokens.transpose(1, 2).unflatten(2, grid)  # (B, D, H/16, W/16)
        return [stage1, stage2, stage3]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, H, W) float32, H, W multiples of 16. Returns (B, N, D) post-norm."""
        return self._encode(x)[2]

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Args: tokens (B, N, D). Returns mean-pooled (B, D), or class logits (B, classes)."""
        pooled = tokens.mean(dim=1)
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, H, W) float32. Returns ``forward_head(forward_features(x))``."""
        return self.forward_head(self.forward_features(x))

    def _encode(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Stage-1 map, stage-2 map, post-norm stage-3 tokens (B, N, D) and their grid."""
        stride = self.patch_embed.patch_size[0]
        if x.dim() != 4 or x.shape[-2] % stride or x.shape[-1] % stride:
            raise ValueError(f'images: expected (B, C, H, W) with H and W multiples of {stride}, '
                             f'got {tuple(x.shape)}')
        stage1 = self.blocks1(self.patch_embed1(x))  # (B, C1, H/4, W/4)
        stage2 = self.blocks2(self.patch_embed2(stage1))  # (B, C2, H/8, W/8)
        x = self.patch_embed3(stage2)  # (B, D, H/16, W/16)
        grid = (x.shape[-2], x.shape[-1])
        x = self.patch_embed4(x.flatten(2).transpose(1, 2))  # (B, N, D), row-major tokens
        x = x + self.position_table(grid, x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return stage1, stage2, self.norm(x), grid


def _check_config(embed_dims: tuple, depths: tuple, patch_sizes: tuple, num_heads: int) -> None:
    for name, value in zip(('embed_dims', 'depths', 'patch_sizes'),
                           (embed_dims, depths, patch_sizes), strict=True):
        if len(value) != 3 or min(value) < 1:
            raise ValueError(f'{name}: expected three positive ints, got {value}')
    if embed_dims[2] % num_heads or embed_dims[2] % 4:
        raise ValueError(f'embed_dims[2]: expected a multiple of num_heads ({num_heads}) and of 4 '
                         f'(2-D sin-cos), got {embed_dims[2]}')


def _init_linear(module: nn.Module) -> None:
    """Official fine-tuning init: truncated normal (std 0.02) Linear weights, zero biases."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def convert_convmae_checkpoint(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official ConvMAE / UNIV keys to this model's keys (keys already converted pass through).

    Drops the MAE decoder (``decoder_*``, ``mask_token``), the stage-1/2 skip projections UNIV
    leaves unused, and ``pos_embed`` (a fixed table, recomputed per input grid); renames
    ``blocks3.*`` to ``blocks.*``. Every other key is kept as it is.
    """
    converted = {}
    for key, value in state_dict.items():
        if key in DROPPED_KEYS or key.startswith(DROPPED_PREFIXES):
            continue
        if key.startswith('blocks3.'):
            key = 'blocks.' + key.removeprefix('blocks3.')
        converted[key] = value
    return converted


def _read_state_dict(path: Path, entry: str) -> dict[str, torch.Tensor]:
    """A flat safetensors file, or ``torch.load(path)[entry]``."""
    if not path.is_file():
        raise FileNotFoundError(f'{path}: ConvMAE checkpoint not found')
    try:  # MAE-style training checkpoints also pickle the run's argparse.Namespace
        if path.suffix == '.safetensors':
            return load_file(path)
        with torch.serialization.safe_globals([argparse.Namespace]):
            payload = torch.load(path, map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, SafetensorError) as error:
        raise ValueError(f'{path}: not a readable checkpoint (torch.load with weights_only=True, '
                         f'or safetensors): {error}') from error
    if not isinstance(payload, dict) or not isinstance(payload.get(entry), dict):
        found = list(payload)[:5] if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f'{path}: expected a dict holding a state dict under {entry!r} '
                         f'(ConvMAE format), found {found}')
    return payload[entry]


def _check_pos_embed(table: torch.Tensor, path: Path) -> None:
    """Refuse a checkpoint whose ``pos_embed`` is not the square sin-cos table this model uses."""
    count, dim = table.shape[-2:]
    side = round(count**0.5)
    expected = sincos_pos_embed((side, side), dim)
    if side * side != count or not torch.allclose(table.reshape(count, dim).float(), expected,
                                                  atol=1e-4):
        raise ValueError(f'{path}: pos_embed {tuple(table.shape)} is not the fixed 2-D sin-cos '
                         'table this model recomputes (a learned table is unsupported)')


def checked_convmae_state(state: dict[str, torch.Tensor], where: Path) -> dict[str, torch.Tensor]:
    """:func:`convert_convmae_checkpoint` after refusing a ``pos_embed`` this model cannot use."""
    if 'pos_embed' in state:
        _check_pos_embed(state['pos_embed'], where)
    return convert_convmae_checkpoint(state)


def load_convmae_checkpoint(
    model: ConvMAE, path: str | Path, entry: str = CHECKPOINT_ENTRY
) -> None:
    """Load an official ConvMAE / UNIV checkpoint into ``model``, strictly.

    Args:
        model: the encoder to fill (its ``num_classes`` must be 0: checkpoints hold no head).
        path: ``torch.save({entry: state_dict})`` file (official format), or a flat safetensors
            state dict (official or converted keys).
        entry: key of the state dict in a torch file: 'model' (ConvMAE release), 'teacher' or
            'student' (UNIV training checkpoints).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a ConvMAE encoder matching ``model``; names the file and the keys.
    """
    path = Path(path)
    state = checked_convmae_state(_read_state_dict(path, entry), path)
    try:
        missing, unexpected = model.load_state_dict(state, False)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f'{path}: not a ConvMAE encoder of this size: {error}') from error
    if missing or unexpected:
        raise ValueError(f'{path}: not a ConvMAE encoder for this model (keys here: blocks.* is '
                         f'the official blocks3.*): missing {missing}, unexpected {unexpected}')


default_cfgs = generate_default_cfgs({'convmae_base': {
    'url': '', 'num_classes': 0, 'input_size': (3, 224, 224), 'pool_size': None,
    'crop_pct': 0.9, 'interpolation': 'bicubic', 'mean': IMAGENET_DEFAULT_MEAN,
    'std': IMAGENET_DEFAULT_STD, 'first_conv': 'patch_embed1.proj', 'classifier': 'head',
}})


@register_model
def convmae_base(pretrained: bool = False, **kwargs: object) -> ConvMAE:
    """ConvMAE-B: widths 256/384/768, depths 2/2/11, 12 heads, stride 16 (UNIV's teacher).

    No hub weights: build with ``pretrained=False`` and call ``load_convmae_checkpoint``.
    Keyword arguments override the architecture (tests use tiny widths and depths).
    """
    if pretrained:
        raise ValueError('convmae_base: no hub weights; use pretrained=False and '
                         'load_convmae_checkpoint(model, path) with the ConvMAE-B checkpoint')
    model_args = dict(embed_dims=(256, 384, 768), depths=(2, 2, 11), num_heads=12,
                      mlp_ratio=4.0, patch_sizes=(4, 2, 2))
    return build_model_with_cfg(ConvMAE, 'convmae_base', pretrained, **dict(model_args, **kwargs))
