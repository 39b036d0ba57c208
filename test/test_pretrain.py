"""PCCL pre-training on toy models (kill + resume, strict resume, DDP, clipping), LoRA export."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from toy import TOY, TOY_ARCH

from univ_core.data.paired import LAYOUTS, find_pairs
from univ_core.train.config import load_config
from univ_core.train.grad_clip import clip_gradients
from univ_core.train.pretrain import PretrainConfig, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def toy_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 aligned 64x80 pairs (IR = grey of RGB plus noise) in the generic vi/ + ir/ layout."""
    root = tmp_path_factory.mktemp('pairs')
    rng = np.random.default_rng(0)
    for sub in ('vi', 'ir'):
        (root / sub).mkdir()
    for i in range(8):
        rgb = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
        cv2.imwrite(str(root / 'vi' / f'{i:03d}.png'), rgb[..., ::-1])
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        cv2.imwrite(str(root / 'ir' / f'{i:03d}.png'), 255 - grey)
    return root


def write_config(path: Path, pairs: Path, out: Path, **extra: object) -> Path:
    cfg = {'arch': TOY_ARCH, 'weights': 'none', 'backbone_overrides': dict(TOY),
           'sources': [{'root': str(pairs), 'layout': 'folder'}], 'img_size': 56,
           'batch_size': 2, 'epochs': 3, 'warmup_epochs': 1, 'lr': 0.5, 'num_workers': 0,
           'out_dir': str(out), 'checkpoint_every': 2, 'device': 'cpu', **extra}
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_pretrain(config: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    return subprocess.Popen([sys.executable, '-m', 'univ_ros.cli', 'pretrain', '--config',
                             str(config), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def lora_of(out: Path) -> dict[str, torch.Tensor]:
    state = torch.load(out / 'last.pt', weights_only=True)
    return state['lora']


def test_killed_run_resumes_to_the_same_parameters(toy_pairs: Path, tmp_path: Path) -> None:
    straight = tmp_path / 'straight'
    steps = 24
    proc = run_pretrain(write_config(tmp_path / 'a.yaml', toy_pairs, straight, epochs=8,
                                     max_steps=steps))
    assert proc.wait(timeout=300) == 0, proc.stdout.read()

    killed = tmp_path / 'killed'
    config = write_config(tmp_path / 'b.yaml', toy_pairs, killed, epochs=8, max_steps=steps)
    proc = run_pretrain(config)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (killed / 'last.pt').exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    steps_at_kill = torch.load(killed / 'last.pt', weights_only=True)['step']
    assert 2 <= steps_at_kill < steps
    proc = run_pretrain(config, '--resume')
    assert proc.wait(timeout=300) == 0, proc.stdout.read()

    a, b = lora_of(straight), lora_of(killed)
    assert torch.load(killed / 'last.pt', weights_only=True)['step'] == steps
    assert a.keys() == b.keys() and len(a) > 0
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert any(v.abs().sum() > 0 for k, v in a.items() if 'lora_B' in k)  # it did train
    merged = load_file(str(killed / 'univ_backbone.safetensors'))
    assert not any('lora' in k for k in merged)


WORKER = """
import sys, torch, torch.distributed as dist
from safetensors.torch import save_file
from univ_core.train.config import load_config
from univ_core.train.pretrain import PretrainConfig, lora_state, train
cfg = load_config(PretrainConfig, sys.argv[1])
student = train(cfg)
state = {k: v.contiguous() for k, v in lora_state(student).items()}
save_file(state, f'{cfg.out_dir}/rank{dist.get_rank()}.safetensors')
dist.destroy_process_group()
"""


def test_ddp_keeps_lora_identical_across_two_cpu_ranks(toy_pairs: Path, tmp_path: Path) -> None:
    out = tmp_path / 'ddp'
    config = write_config(tmp_path / 'ddp.yaml', toy_pairs, out, max_steps=3)
    worker = tmp_path / 'worker.py'
    worker.write_text(WORKER)
    torchrun = Path(sys.executable).with_name('torchrun')
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    run = subprocess.run([str(torchrun), '--standalone', '--nproc_per_node', '2', str(worker),
                          str(config)], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    r0, r1 = load_file(str(out / 'rank0.safetensors')), load_file(str(out / 'rank1.safetensors'))
    assert r0.keys() == r1.keys() and r0
    for name in r0:
        assert torch.equal(r0[name], r1[name]), f'{name} differs across ranks'
    assert any(v.abs().sum() > 0 for k, v in r0.items() if 'lora_B' in k)
    # The ranks trained on different shards (so equality above needs the all-reduce).
    rows = [json.loads(line) for line in (out / 'log.jsonl').read_text().splitlines()]
    assert [r['step'] for r in rows] == [1, 2, 3]


def test_per_parameter_clipping_matches_a_hand_computation() -> None:
    a, b, frozen = (torch.nn.Parameter(torch.zeros(n)) for n in (2, 2, 1))
    a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.6, 0.8])  # norms 5 and 1
    clip_gradients([a, b, frozen], 2.0, 'param')
    assert torch.allclose(a.grad, torch.tensor([3.0, 4.0]) * 2 / (5 + 1e-6))  # to norm 2
    assert torch.equal(b.grad, torch.tensor([0.6, 0.8]))  # under the limit: untouched
    assert frozen.grad is None
    a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.6, 0.8])
    clip_gradients([a, b], 2.0, 'global')  # one factor from the norm of both: sqrt(26)
    factor = 2 / (math.sqrt(26) + 1e-6)
    assert torch.allclose(a.grad, torch.tensor([3.0, 4.0]) * factor)
    assert torch.allclose(b.grad, torch.tensor([0.6, 0.8]) * factor)  # shrunk, unlike 'param'


def test_clip_mode_is_validated(tmp_path: Path) -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.ones(2)
    with pytest.raises(ValueError, match="'norm'"):
        clip_gradients([p], 1.0, 'norm')
    assert torch.equal(p.grad, torch.ones(2))
    config = write_config(tmp_path / 'c.yaml', tmp_path, tmp_path / 'out')
    with pytest.raises(ValueError, match="clip_mode.*'per_param'"):
        load_config(PretrainConfig, config, ['clip_mode=per_param'])
    with pytest.raises(ValueError, match='max_steps must be >= 1'):  # not "no limit"
        load_config(PretrainConfig, config, ['max_steps=0'])


@pytest.fixture(scope='module')
def two_step_run(toy_pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """last.pt of a 2-step toy run (in this process: fast)."""
    out = tmp_path_factory.mktemp('two_steps')
    train(load_config(PretrainConfig, write_config(out / 'c.yaml', toy_pairs, out / 'run',
                                                   max_steps=2)))
    return out / 'run' / 'last.pt'


def _resume(toy_pairs: Path, tmp_path: Path, state: dict) -> Path:
    """Resume a run whose last.pt is ``state`` (already at max_steps: nothing more trains)."""
    (tmp_path / 'run').mkdir()
    torch.save(state, tmp_path / 'run' / 'last.pt')
    train(load_config(PretrainConfig, write_config(tmp_path / 'c.yaml', toy_pairs,
                                                   tmp_path / 'run', max_steps=2)), resume=True)
    return tmp_path / 'run' / 'last.pt'


EXTRA = 'base_model.model.backbone.blocks.7.attn.qkv.lora_A.default.weight'


@pytest.mark.parametrize('damage', ['missing', 'extra', 'shape'])
def test_resume_refuses_lora_that_does_not_fit(two_step_run: Path, toy_pairs: Path,
                                               tmp_path: Path, damage: str) -> None:
    state = torch.load(two_step_run, weights_only=True)
    lora = state['lora']
    key = sorted(lora)[0] if damage != 'extra' else EXTRA
    if damage == 'missing':
        del lora[key]
    elif damage == 'extra':
        lora[key] = torch.zeros(8, 32)
    else:  # rank 4 instead of 8
        lora[key] = lora[key][:4].clone()
    with pytest.raises(ValueError, match='LoRA tensors') as error:
        _resume(toy_pairs, tmp_path, state)
    assert str(tmp_path / 'run' / 'last.pt') in str(error.value) and key in str(error.value)


def test_resume_restores_lora_and_cpu_and_cuda_rng(two_step_run: Path, toy_pairs: Path,
                                                   tmp_path: Path, monkeypatch) -> None:
    state = torch.load(two_step_run, weights_only=True)
    state['cuda_rng'] = [torch.arange(16, dtype=torch.uint8)]  # as if saved on one GPU
    restored = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'set_rng_state_all', restored.append)
    torch.manual_seed(123)
    _resume(toy_pairs, tmp_path, state)
    assert len(restored) == 1 and torch.equal(restored[0][0], state['cuda_rng'][0])
    assert torch.equal(torch.get_rng_state(), state['rng'])
    merged = load_file(str(tmp_path / 'run' / 'univ_backbone.safetensors'))
    assert not any('lora' in k for k in merged)


OFFICIAL_MVIP = ['FLIR-ALIGN', 'KAIST_MMSEG', 'LasHeR0428_rename', 'LLVIP', 'VisDrone']


def test_paper_config_lists_the_official_mvip_sources_in_known_layouts(tmp_path: Path) -> None:
    cfg = load_config(PretrainConfig, REPO / 'config' / 'pretrain_paper.yaml')
    assert [Path(s.root).name for s in cfg.sources] == OFFICIAL_MVIP  # UNIV datasets/datasets.py
    assert all(s.layout in LAYOUTS for s in cfg.sources)
    assert 'patch_embed4' in cfg.lora.target_modules
    assert (cfg.clip_mode, cfg.clip_grad, cfg.epochs, cfg.batch_size) == ('param', 3.0, 400, 32)
    for source in cfg.sources:  # each reads an MVIP folder (training split) as the official code
        root = tmp_path / Path(source.root).name
        for sub in ('vi_images/training', 'images/training', 'images/validation'):
            (root / sub).mkdir(parents=True)
        cv2.imwrite(str(root / 'vi_images/training/x.png'), np.zeros((4, 4, 3), np.uint8))
        cv2.imwrite(str(root / 'images/training/x.png'), np.zeros((4, 4), np.uint8))
        cv2.imwrite(str(root / 'images/validation/y.png'), np.zeros((4, 4), np.uint8))
        assert [p.name for p in find_pairs(root, source.layout, source.split)] == ['x']


def test_lora_export_refuses_a_merge_beyond_the_given_tolerance(toy_pairs: Path, tmp_path: Path,
                                                                 capsys) -> None:
    # A 1-step run on the real ViT-S/14 (export rebuilds the student from the embedded teacher).
    from univ_ros.cli import main

    run = tmp_path / 'run'
    train(load_config(PretrainConfig, write_config(
        tmp_path / 'c.yaml', toy_pairs, run, arch='vit_small_patch14_dinov2', weights='default',
        backbone_overrides={}, img_size=28, max_steps=1, warmup_epochs=0, lr=0.05)))
    out = tmp_path / 'adapter.safetensors'
    assert main(['export', '--format', 'lora', '--from-pretrain', str(run), '--out', str(out),
                 '--tolerance', '1e-12']) == 1
    assert '> 1e-12; not written' in capsys.readouterr().err
    assert not out.exists() and not out.with_suffix('.json').exists()
    assert main(['export', '--format', 'lora', '--from-pretrain', str(run), '--out',
                 str(out)]) == 0  # the default tolerance: 1e-4 in float64
    record = json.loads(out.with_suffix('.json').read_text())
    assert 1e-12 < record['merge_max_abs_diff'] <= 1e-4 and record['step'] == 1


def test_merged_export_of_a_snapshot_merges_that_snapshot(toy_pairs: Path, tmp_path: Path,
                                                         capsys) -> None:
    # --snapshot was read by --format lora only; safetensors silently merged last.pt instead
    from safetensors import safe_open

    from univ_ros.cli import main

    run = tmp_path / 'run'
    train(load_config(PretrainConfig, write_config(
        tmp_path / 'c.yaml', toy_pairs, run, arch='vit_small_patch14_dinov2', weights='default',
        backbone_overrides={}, img_size=28, max_steps=2, warmup_epochs=0, lr=0.05,
        snapshot_every=1)))
    merged, step1 = {}, str(run / 'lora_step00001.safetensors')
    for name, extra in (('last', []), ('step1', ['--snapshot', step1])):
        out = tmp_path / f'{name}.safetensors'
        assert main(['export', '--format', 'safetensors', '--from-pretrain', str(run), '--out',
                     str(out), *extra]) == 0
        with safe_open(str(out), 'pt') as f:
            merged[name] = (f.metadata()['step'], f.get_tensor('blocks.11.attn.qkv.weight'))
    assert merged['last'][0] == '2' and merged['step1'][0] == '1'
    assert not torch.equal(merged['last'][1], merged['step1'][1])
    assert main(['export', '--format', 'onnx', '--snapshot', step1,
                 '--out', str(tmp_path / 'x.onnx')]) == 1  # refused, not ignored
    assert '--format onnx exports a model file' in capsys.readouterr().err
    assert main(['export', '--format', 'safetensors', '--from-pretrain', str(run), '--input-size',
                 '56', '70', '--out', str(tmp_path / 'y.safetensors')]) == 1  # onnx-only flag
    assert '--input-size: --format onnx only' in capsys.readouterr().err


def test_lora_export_refuses_a_run_not_started_from_the_teacher(toy_pairs: Path, tmp_path: Path,
                                                                capsys) -> None:
    # an adapter is merged into the embedded teacher: one trained on another start is refused
    from univ_ros.cli import main

    run = tmp_path / 'run'
    train(load_config(PretrainConfig, write_config(
        tmp_path / 'c.yaml', toy_pairs, run, arch='vit_small_patch14_dinov2', weights='univ',
        backbone_overrides={}, img_size=28, max_steps=1, warmup_epochs=0)))
    out = tmp_path / 'adapter.safetensors'
    assert main(['export', '--format', 'lora', '--from-pretrain', str(run), '--out',
                 str(out)]) == 1
    assert "pre-trained from weights 'univ'" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize('config', ['pretrain_cpu', 'pretrain_univ'])
def test_no_config_pretrains_on_an_evaluation_pair(config, data_dir):
    """pretrain_cpu.yaml lists no ``exclude``: the evaluation pairs are dropped all the same."""
    from univ_core.data.evaluation_pairs import is_evaluation_pair
    from univ_core.train.config import load_config
    from univ_core.train.pretrain import PretrainConfig, build_pairs

    cfg = load_config(PretrainConfig, REPO / 'config' / f'{config}.yaml', [])
    train, held = build_pairs(cfg, REPO / 'config')
    assert len(train) == 242 and len(held) == 12
    assert not any(is_evaluation_pair(p.name) for p in train)
