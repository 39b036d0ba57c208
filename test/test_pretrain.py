"""PCCL pre-training on toy models: a real kill + resume, and DDP LoRA sync across 2 processes."""

import json
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
