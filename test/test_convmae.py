"""ConvMAE-B as a timm model: shapes, strides, sin-cos table, official checkpoint loading."""

import argparse

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.models.vision_transformer import Block
from torch import nn

from univ_core.models.convmae import (
    ConvMAE,
    convert_convmae_checkpoint,
    load_convmae_checkpoint,
    sincos_pos_embed,
)

DIMS, DEPTHS, HEADS, RATIO = (8, 12, 16), (1, 1, 2), 2, 2.0
TINY = {'embed_dims': DIMS, 'depths': DEPTHS, 'num_heads': HEADS, 'mlp_ratio': RATIO}


def tiny(**overrides) -> ConvMAE:
    return timm.create_model('convmae_base', pretrained=False, **{**TINY, **overrides}).eval()


# --- the official layout, written from fangyuanmao/UNIV models/backbone/mcmae (not our model) ---


def mae_sincos(dim: int, rows: int, cols: int) -> np.ndarray:
    """MAE util/pos_embed.get_2d_sincos_pos_embed, generalised to rows x cols grids."""
    def one_d(half: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(half // 2, dtype=np.float64) / (half / 2.0))
        out = np.einsum('m,d->md', pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.stack(np.meshgrid(np.arange(cols, dtype=np.float64),
                                np.arange(rows, dtype=np.float64)), axis=0)  # (2, rows, cols)
    return np.concatenate([one_d(dim // 2, grid[0]), one_d(dim // 2, grid[1])], axis=1)


def official_shapes(dec: int = 8) -> dict[str, tuple[int, ...]]:
    """Keys/shapes of MaskedAutoencoderConvViT's state dict (tiny sizes, 224 px, 1 dec block)."""
    d1, d2, d3 = DIMS
    shapes: dict[str, tuple[int, ...]] = {}
    for stage, (cin, cout, p) in enumerate(((3, d1, 4), (d1, d2, 2), (d2, d3, 2)), start=1):
        k = f'patch_embed{stage}.'
        shapes |= {k + 'proj.weight': (cout, cin, p, p), k + 'proj.bias': (cout,),
                   k + 'norm.weight': (cout,), k + 'norm.bias': (cout,)}
    shapes |= {'patch_embed4.weight': (d3, d3), 'patch_embed4.bias': (d3,),
               'stage1_output_decode.weight': (d3, d1, 4, 4), 'stage1_output_decode.bias': (d3,),
               'stage2_output_decode.weight': (d3, d2, 2, 2), 'stage2_output_decode.bias': (d3,),
               'pos_embed': (1, 196, d3), 'norm.weight': (d3,), 'norm.bias': (d3,)}
    for stage, dim, depth in ((1, d1, DEPTHS[0]), (2, d2, DEPTHS[1])):
        hidden = int(dim * RATIO)
        for i in range(depth):
            k = f'blocks{stage}.{i}.'
            shapes |= {k + 'norm1.weight': (dim,), k + 'norm1.bias': (dim,),
                       k + 'conv1.weight': (dim, dim, 1, 1), k + 'conv1.bias': (dim,),
                       k + 'attn.weight': (dim, 1, 5, 5), k + 'attn.bias': (dim,),
                       k + 'conv2.weight': (dim, dim, 1, 1), k + 'conv2.bias': (dim,),
                       k + 'norm2.weight': (dim,), k + 'norm2.bias': (dim,),
                       k + 'mlp.fc1.weight': (hidden, dim, 1, 1), k + 'mlp.fc1.bias': (hidden,),
                       k + 'mlp.fc2.weight': (dim, hidden, 1, 1), k + 'mlp.fc2.bias': (dim,)}
    for prefix, dim, depth in (('blocks3', d3, DEPTHS[2]), ('decoder_blocks', dec, 1)):
        hidden = int(dim * RATIO)
        for i in range(depth):
            k = f'{prefix}.{i}.'
            shapes |= {k + 'norm1.weight': (dim,), k + 'norm1.bias': (dim,),
                       k + 'attn.qkv.weight': (3 * dim, dim), k + 'attn.qkv.bias': (3 * dim,),
                       k + 'attn.proj.weight': (dim, dim), k + 'attn.proj.bias': (dim,),
                       k + 'norm2.weight': (dim,), k + 'norm2.bias': (dim,),
                       k + 'mlp.fc1.weight': (hidden, dim), k + 'mlp.fc1.bias': (hidden,),
                       k + 'mlp.fc2.weight': (dim, hidden), k + 'mlp.fc2.bias': (dim,)}
    shapes |= {'decoder_embed.weight': (dec, d3), 'decoder_embed.bias': (dec,),
               'mask_token': (1, 1, dec), 'decoder_pos_embed': (1, 196, dec),
               'decoder_norm.weight': (dec,), 'decoder_norm.bias': (dec,),
               'decoder_pred.weight': (16 * 16 * 3, dec), 'decoder_pred.bias': (16 * 16 * 3,)}
    return shapes


def official_checkpoint(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sd = {k: 0.3 * torch.randn(s, generator=gen) for k, s in official_shapes().items()}
    sd |= {k: 1 + v for k, v in sd.items() if 'norm' in k and k.endswith('weight')}
    sd['pos_embed'] = torch.from_numpy(mae_sincos(DIMS[2], 14, 14)).float()[None]
    return sd


def official_encoder(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """forward_encoder(x, mask_ratio=0) of the official code, in functional form."""
    def ln(t, k, eps):
        return F.layer_norm(t, t.shape[-1:], sd[k + '.weight'], sd[k + '.bias'], eps)

    def ln_c(t, k, eps=1e-5):
        return ln(t.permute(0, 2, 3, 1), k, eps).permute(0, 3, 1, 2)

    def conv(t, k, **kw):
        return F.conv2d(t, sd[k + '.weight'], sd[k + '.bias'], **kw)

    def lin(t, k):
        return F.linear(t, sd[k + '.weight'], sd[k + '.bias'])

    for stage, stride in ((1, 4), (2, 2)):
        k = f'patch_embed{stage}.'
        x = F.gelu(ln_c(conv(x, k + 'proj', stride=stride), k + 'norm'))
        for i in range(DEPTHS[stage - 1]):
            k = f'blocks{stage}.{i}.'
            y = conv(ln_c(x, k + 'norm1'), k + 'conv1')
            y = conv(y, k + 'attn', padding=2, groups=x.shape[1])  # depthwise 5x5
            x = x + conv(y, k + 'conv2')
            x = x + conv(F.gelu(conv(ln_c(x, k + 'norm2'), k + 'mlp.fc1')), k + 'mlp.fc2')
    x = F.gelu(ln_c(conv(x, 'patch_embed3.proj', stride=2), 'patch_embed3.norm'))
    rows, cols = x.shape[-2:]
    x = lin(x.flatten(2).permute(0, 2, 1), 'patch_embed4')
    x = x + torch.from_numpy(mae_sincos(DIMS[2], rows, cols)).float()
    b, n, c = x.shape
    for i in range(DEPTHS[2]):
        k = f'blocks3.{i}.'
        qkv = lin(ln(x, k + 'norm1', 1e-6), k + 'attn.qkv').reshape(b, n, 3, HEADS, c // HEADS)
        q, kk, v = qkv.permute(2, 0, 3, 1, 4)
        attn = ((q @ kk.transpose(-2, -1)) * (c // HEADS) ** -0.5).softmax(-1)
        x = x + lin((attn @ v).transpose(1, 2).reshape(b, n, c), k + 'attn.proj')
        x = x + lin(F.gelu(lin(ln(x, k + 'norm2', 1e-6), k + 'mlp.fc1')), k + 'mlp.fc2')
    return ln(x, 'norm', 1e-6)


# --- tests ---


def test_forward_features_on_non_square_input() -> None:
    model = tiny()
    tokens = model.forward_features(torch.randn(2, 3, 32, 80))
    assert tokens.shape == (2, 2 * 5, DIMS[2])
    assert model.num_prefix_tokens == 0 and model.embed_dim == DIMS[2]
    assert model.patch_embed.patch_size == (16, 16)
    with pytest.raises(ValueError, match='multiples of 16'):
        model.forward_features(torch.randn(1, 3, 32, 40))


def test_forward_stages_have_strides_4_8_16_and_end_in_the_tokens() -> None:
    model = tiny()
    x = torch.randn(1, 3, 48, 64)
    s1, s2, s3 = model.forward_stages(x)
    assert s1.shape == (1, DIMS[0], 12, 16) and s2.shape == (1, DIMS[1], 6, 8)
    assert s3.shape == (1, DIMS[2], 3, 4)
    info = [(f['num_chs'], f['reduction']) for f in model.feature_info]
    assert info == [(8, 4), (12, 8), (16, 16)]
    tokens = model.forward_features(x)  # (1, 12, D), row-major
    assert torch.allclose(s3[0, :, 1, 2], tokens[0, 1 * 4 + 2])


def test_convmae_base_has_the_official_b_sizes() -> None:
    with torch.device('meta'):
        model = timm.create_model('convmae_base', pretrained=False)
    assert len(model.blocks1) == 2 and len(model.blocks2) == 2 and len(model.blocks) == 11
    assert model.patch_embed1.proj.weight.shape == (256, 3, 4, 4)
    assert model.patch_embed3.proj.weight.shape == (768, 384, 2, 2)
    assert model.blocks[0].attn.num_heads == 12 and model.blocks[0].mlp.fc1.out_features == 3072
    assert model.embed_dim == 768 and model.patch_embed.grid_size == (14, 14)
    with pytest.raises(ValueError, match='no hub weights'):
        timm.create_model('convmae_base', pretrained=True)


def test_last_block_is_a_timm_block_with_its_attention_attributes() -> None:
    model = tiny()
    block = model.blocks[-1]
    assert isinstance(block, Block) and isinstance(model.blocks, nn.Sequential)
    names = ('qkv', 'proj', 'num_heads', 'scale', 'q_norm', 'k_norm', 'attn_drop', 'fused_attn')
    for name in names:
        assert hasattr(block.attn, name), name
    assert isinstance(block.mlp.fc1, nn.Linear) and isinstance(block.mlp.fc2, nn.Linear)


def test_sincos_table_matches_mae_layout_for_any_grid() -> None:
    for rows, cols in ((14, 14), (3, 5)):
        expected = torch.from_numpy(mae_sincos(32, rows, cols)).float()
        assert torch.allclose(sincos_pos_embed((rows, cols), 32), expected, atol=1e-5)


def test_position_table_is_cached_per_grid_and_usable_after_inference_mode() -> None:
    model = tiny()
    with torch.inference_mode():
        model(torch.randn(1, 3, 32, 32))
    model.train()
    model(torch.randn(1, 3, 32, 32)).sum().backward()  # cached table made in inference mode
    model(torch.randn(1, 3, 16, 48))
    assert {key[0] for key in model._pos_cache} == {(2, 2), (1, 3)}


def test_official_checkpoint_loads_and_reproduces_the_official_forward(tmp_path) -> None:
    sd = official_checkpoint()
    path = tmp_path / 'convmae_tiny.pth'
    torch.save({'model': sd, 'epoch': 3, 'args': argparse.Namespace(lr=1e-4)}, path)  # as MAE
    model = tiny()
    load_convmae_checkpoint(model, path)
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        assert torch.allclose(model.forward_features(x), official_encoder(sd, x), atol=1e-5)
    assert set(model.state_dict()) == set(convert_convmae_checkpoint(sd))
    again = tiny()  # converted keys in a flat safetensors file load too
    save_file(model.state_dict(), tmp_path / 'converted.safetensors')
    load_convmae_checkpoint(again, tmp_path / 'converted.safetensors')
    with torch.no_grad():
        assert torch.equal(again.forward_features(x), model.forward_features(x))


@pytest.mark.parametrize(('edit', 'message'), [
    (lambda sd: sd.pop('blocks3.1.mlp.fc2.bias'), r"missing \['blocks.1.mlp.fc2.bias'\]"),
    (lambda sd: sd.update({'blocks3.9.norm1.weight': torch.ones(16)}), 'blocks.9.norm1.weight'),
    (lambda sd: sd.update(pos_embed=sd['pos_embed'].flip(1)), 'pos_embed'),
    (lambda sd: sd.update({'norm.weight': torch.ones(5)}), 'size'),
])
def test_bad_checkpoints_fail_naming_the_file_and_the_key(tmp_path, edit, message) -> None:
    sd = official_checkpoint()
    edit(sd)
    path = tmp_path / 'bad.pth'
    torch.save({'model': sd}, path)
    with pytest.raises(ValueError, match=message) as error:
        load_convmae_checkpoint(tiny(), path)
    assert str(path) in str(error.value)


def test_checkpoint_without_the_model_entry_or_file_is_refused(tmp_path) -> None:
    path = tmp_path / 'student_only.pth'
    torch.save({'student': official_checkpoint()}, path)
    with pytest.raises(ValueError, match="under 'model'"):
        load_convmae_checkpoint(tiny(), path)
    load_convmae_checkpoint(tiny(), path, entry='student')
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        load_convmae_checkpoint(tiny(), tmp_path / 'missing.pth')


def test_lora_targets_patch_embed4_as_the_official_config_and_merges_exactly() -> None:
    from peft.tuners.lora import LoraLayer

    from univ_core.models.backbone import PatchEncoder, create_backbone
    from univ_core.models.lora import LoraSettings, add_lora, merge_lora
    from univ_core.train.pretrain import PretrainConfig

    torch.manual_seed(0)
    student = add_lora(PatchEncoder(create_backbone('convmae_base', 'none', **TINY)),
                       LoraSettings(), 'convmae_base')
    names = {n.removeprefix('base_model.model.backbone.') for n, m in student.named_modules()
             if isinstance(m, LoraLayer)}
    # configs/mcmae.yaml: qkv, proj, fc1, fc2 (also the conv stages' 1x1 MLPs and patch
    # embedding convolutions, by suffix) and patch_embed4; its decoder targets are not here.
    convs = {f'blocks{s}.0.mlp.fc{i}' for s in (1, 2) for i in (1, 2)}
    blocks = {f'blocks.{b}.{m}' for b in (0, 1)
              for m in ('attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2')}
    assert names == {'patch_embed1.proj', 'patch_embed2.proj', 'patch_embed3.proj',
                     'patch_embed4'} | convs | blocks
    with torch.no_grad():  # non-trivial adapters (B starts at zero)
        for name, p in student.named_parameters():
            if 'lora_B' in name:
                p.normal_(0, 0.05)
    student.eval()
    merged = merge_lora(student).eval()
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad(), student.disable_adapter():
        plain = student(x)
    with torch.no_grad():
        assert (merged(x) - student(x)).abs().max().item() < 1e-4
        assert (merged(x) - plain).abs().max().item() > 1e-3  # the adapters did change it
    tiny().load_state_dict(merged.backbone.state_dict(), strict=True)

    source = [{'root': 'unused'}]
    convmae = PretrainConfig(arch='convmae_base', sources=source)
    assert convmae.lora.target_modules == ('qkv', 'proj', 'fc1', 'fc2', 'patch_embed4')
    vit = PretrainConfig(arch='vit_small_patch14_dinov2', sources=source)
    assert vit.lora.target_modules == ('qkv', 'proj', 'fc1', 'fc2')  # the shipped adapter's
    mine = PretrainConfig(arch='convmae_base', sources=source, lora=LoraSettings(
        target_modules=('qkv',)))
    assert mine.lora.target_modules == ('qkv',)  # explicit targets are kept
