"""Backbone tokens, last-block attention capture, LoRA invariants and merged export."""

import copy

import timm
import torch
from peft.tuners.lora import LoraLayer
from toy import TOY, TOY_ARCH, toy_backbone

from univ_core.models.backbone import PatchEncoder, _head_mean_attention, tokens_and_last_attention
from univ_core.models.lora import LoraSettings, add_lora, merge_lora, trainable_fraction


def test_patch_tokens_drop_prefix_and_accept_non_square_input() -> None:
    encoder = PatchEncoder(toy_backbone()).eval()
    x = torch.randn(2, 3, 42, 70)  # 3 x 5 patches of 14 px
    tokens = encoder(x)
    assert tokens.shape == (2, 15, 32)
    assert encoder.grid_size(42, 70) == (3, 5)


def test_captured_attention_reproduces_the_block_output() -> None:
    # With one head, A @ v then proj must equal what the attention module itself computed.
    encoder = PatchEncoder(toy_backbone(num_heads=1)).eval()
    attn = encoder.backbone.blocks[-1].attn
    seen = {}
    attn.register_forward_hook(lambda m, args, out: seen.update(x=args[0], out=out))
    encoder(torch.randn(1, 3, 28, 42))
    a = _head_mean_attention(attn, seen['x'])  # (1, T, T)
    v = attn.qkv(seen['x']).chunk(3, dim=-1)[2]
    assert torch.allclose(attn.proj(a @ v), seen['out'], atol=1e-5)


def test_teacher_attention_is_patch_only_row_stochastic() -> None:
    encoder = PatchEncoder(toy_backbone()).eval()
    x = torch.randn(2, 3, 28, 56)
    tokens, attention = tokens_and_last_attention(encoder, x)
    assert tokens.shape == (2, 8, 32) and attention.shape == (2, 8, 8)
    assert torch.allclose(attention.sum(-1), torch.ones(2, 8), atol=1e-5)
    assert torch.equal(tokens, encoder(x))  # capturing attention does not change the forward
    assert len(encoder.backbone.blocks[-1].attn._forward_pre_hooks) == 0  # hook removed


def test_lora_targets_and_trainable_fraction_on_vit_small() -> None:
    student = add_lora(PatchEncoder(timm.create_model(TOY_ARCH, pretrained=False, num_classes=0)),
                       LoraSettings(), TOY_ARCH)
    names = [n for n, m in student.named_modules() if isinstance(m, LoraLayer)]
    leaves = {n.rsplit('.', 1)[-1] for n in names}
    assert leaves == {'qkv', 'proj', 'fc1', 'fc2'}
    trainable, total = trainable_fraction(student)
    print(f'LoRA r=8 on ViT-S/14: {trainable:,} / {total:,} = {100 * trainable / total:.2f} %')
    assert 0.01 < trainable / total < 0.04
    assert all('lora_' in n for n, p in student.named_parameters() if p.requires_grad)


def test_lora_student_equals_teacher_at_init() -> None:
    torch.manual_seed(0)
    teacher = PatchEncoder(toy_backbone()).eval()
    student = add_lora(copy.deepcopy(teacher), LoraSettings(), TOY_ARCH).eval()
    x = torch.randn(1, 3, 28, 28)
    assert torch.allclose(student(x), teacher(x), atol=1e-6)


def test_merged_export_equals_unmerged_student_and_loads_strictly() -> None:
    torch.manual_seed(0)
    student = add_lora(PatchEncoder(toy_backbone()), LoraSettings(), TOY_ARCH)
    with torch.no_grad():  # make the adapters non-trivial (B starts at zero)
        for name, p in student.named_parameters():
            if 'lora_B' in name:
                p.normal_(0, 0.05)
    student.eval()
    x = torch.randn(2, 3, 42, 56)
    merged = merge_lora(student).eval()
    assert not any(isinstance(m, LoraLayer) for m in merged.modules())
    assert (merged(x) - student(x)).abs().max().item() < 1e-4
    plain = timm.create_model(TOY_ARCH, pretrained=False, num_classes=0, dynamic_img_size=True,
                              **TOY)
    plain.load_state_dict(merged.backbone.state_dict(), strict=True)
    assert (PatchEncoder(plain).eval()(x) - student(x)).abs().max().item() < 1e-4
