"""Official UNIV release checkpoints ({'student', 'teacher', 'args'}) -> plain timm weights."""

import argparse
import functools
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from test_convmae import TINY, official_checkpoint, official_encoder
from toy import TOY, TOY_ARCH

from univ_core.models import univ_release
from univ_core.models.backbone import create_backbone
from univ_core.models.lora import LoraSettings, add_lora, merge_lora
from univ_ros.cli import main as univ


def save_release(path: Path, student: dict[str, torch.Tensor], **extra: object) -> Path:
    """As pretrain_mcmae.py saves: student, teacher, optimizer, epoch, args (a Namespace), ..."""
    torch.save({'student': student, 'teacher': official_checkpoint(seed=1),
                'optimizer': {'state': {}, 'param_groups': [{'lr': 1e-4, 'params': [0]}]},
                'epoch': 400, 'cross_modality_loss_fn': {}, 'fp16_scaler': {'scale': 1024.0},
                'args': argparse.Namespace(output_dir='/out', clip_grad=3.0, use_fp16=True,
                                           local_rank=0, dist_url='env://'),
                **extra}, path)
    return path


def test_official_merged_student_converts_to_strict_timm_weights(tmp_path: Path) -> None:
    student = official_checkpoint()  # the official code saves the merged student: plain keys
    path = save_release(tmp_path / 'checkpoint.pth', student)
    state = univ_release.release_state_dict(path, 'convmae_base', **TINY)
    model = timm.create_model('convmae_base', pretrained=False, **TINY).eval()
    model.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        assert torch.allclose(model.forward_features(x), official_encoder(student, x), atol=1e-5)
    ddp = {f'module.{k}': v for k, v in student.items()}  # saved from the DDP wrapper
    again = univ_release.release_state_dict(save_release(tmp_path / 'ddp.pth', ddp),
                                            'convmae_base', **TINY)
    assert again.keys() == state.keys() and all(torch.equal(again[k], state[k]) for k in state)


def test_unmerged_peft_student_is_merged(tmp_path: Path) -> None:
    torch.manual_seed(0)
    peft = add_lora(timm.create_model('convmae_base', pretrained=False, **TINY), LoraSettings(),
                    'convmae_base')
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if 'lora_B' in name:
                p.normal_(0, 0.05)
    official = official_checkpoint()
    student = {k: v for k, v in official.items()  # what our model leaves out: decoder, table
               if k.startswith(('decoder_', 'stage1_', 'stage2_')) or k in ('pos_embed',
                                                                             'mask_token')}
    student['decoder_embed.lora_A.default.weight'] = torch.randn(8, 16)  # the official targets
    for key, value in peft.state_dict().items():  # official names: blocks3, 'module.' (DDP)
        key = key.replace('base_model.model.blocks.', 'base_model.model.blocks3.')
        student[f'module.{key}'] = value
    path = save_release(tmp_path / 'peft.pth', student)
    state = univ_release.release_state_dict(path, 'convmae_base', **TINY)
    assert not any('lora' in k or 'base_layer' in k for k in state)
    model = timm.create_model('convmae_base', pretrained=False, **TINY).eval()
    model.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - peft.eval()(x)).abs().max().item() < 1e-4
        merged = merge_lora(peft)
        assert torch.allclose(state['patch_embed4.weight'], merged.patch_embed4.weight)


def test_tiny_vit_student_round_trips(tmp_path: Path) -> None:
    student = create_backbone(TOY_ARCH, 'none', **TOY).state_dict()
    path = save_release(tmp_path / 'vit.pth', {f'module.{k}': v for k, v in student.items()})
    state = univ_release.release_state_dict(path, TOY_ARCH, **TOY)
    timm.create_model(TOY_ARCH, pretrained=False, **TOY).load_state_dict(state, strict=True)
    assert all(torch.equal(state[k], student[k]) for k in student)
    with pytest.raises(ValueError, match='pos_embed') as error:  # wrong --arch: a ViT's table
        univ_release.release_state_dict(path, 'convmae_base', **TINY)
    assert str(path) in str(error.value)
    convmae = save_release(tmp_path / 'convmae.pth', official_checkpoint())
    with pytest.raises(ValueError, match=f'not a {TOY_ARCH} state dict: missing') as error:
        univ_release.release_state_dict(convmae, TOY_ARCH, **TOY)
    assert str(convmae) in str(error.value)


class NotAllowed:
    """A class the weights_only unpickler must refuse (no arbitrary code from a file)."""


@pytest.mark.parametrize(('payload', 'message'), [
    ({'model': {'norm.weight': torch.ones(16)}, 'args': argparse.Namespace()},
     r"no 'student' state dict.*found \['args', 'model'\]"),
    ({'student': {'norm.weight': torch.ones(16)}, 'args': NotAllowed()}, 'weights_only=True'),
])
def test_files_that_are_not_a_release_are_refused_naming_them(tmp_path: Path, payload,
                                                              message: str) -> None:
    path = tmp_path / 'other.pth'
    torch.save(payload, path)
    with pytest.raises(ValueError, match=message) as error:
        univ_release.release_state_dict(path, 'convmae_base', **TINY)
    assert str(path) in str(error.value)
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        univ_release.release_state_dict(tmp_path / 'missing.pth')


def test_damaged_weight_files_are_named(tmp_path: Path) -> None:
    """A cut zip checkpoint, an empty one and junk safetensors: ValueErrors naming the file."""
    from univ_core.models.convmae import _read_state_dict
    from univ_core.models.univ_weights import read_lora

    whole = tmp_path / 'whole.pth'
    torch.save({'student': {'norm.weight': torch.ones(4096)}}, whole)
    cut, empty, junk = tmp_path / 'cut.pth', tmp_path / 'empty.pth', tmp_path / 'junk.safetensors'
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    empty.write_bytes(b'')
    junk.write_bytes(b'not a safetensors file')
    calls = [(univ_release.release_state_dict, cut), (univ_release.release_state_dict, empty),
             (functools.partial(_read_state_dict, entry='model'), cut),
             (functools.partial(_read_state_dict, entry='model'), empty),
             (functools.partial(_read_state_dict, entry='model'), junk), (read_lora, junk)]
    for read, path in calls:
        with pytest.raises(ValueError, match=str(path)):
            read(path)


def test_cli_writes_an_atomic_safetensors_file(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(univ_release, 'release_state_dict',  # full size is ~350 MB: tiny here
                        functools.partial(univ_release.release_state_dict, **TINY))
    path = save_release(tmp_path / 'checkpoint.pth', official_checkpoint())
    out = tmp_path / 'weights' / 'univ_convmae.safetensors'
    assert univ(['weights', '--release', str(path), '--out', str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary left behind
    model = create_backbone('convmae_base', str(out), **TINY)  # weights: FILE reads it too
    model.load_state_dict(load_file(str(out)), strict=True)
    with safe_open(str(out), 'pt') as f:
        assert f.metadata() == {'format': 'univ-release', 'arch': 'convmae_base'}
    monkeypatch.setenv('UNIV_CACHE', str(tmp_path / 'cache'))
    assert univ(['weights', '--release', str(path)]) == 0
    assert (tmp_path / 'cache' / 'convmae_base.univ_release.safetensors').is_file()
    assert univ(['weights', '--out', str(out)]) == 1  # --out without --release
    assert '--release' in capsys.readouterr().err
