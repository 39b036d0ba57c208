"""PCCL pre-training step throughput (pairs/s) and peak memory at 224x224, batch 8.

Teacher and LoRA student as ``univ pretrain`` builds them (ViT-S/14, 'default' weights).
Baseline: the student runs RGB and IR in two forwards. Optimised: ``pccl_losses`` (one forward
for both modalities). Each variant runs in its own process so its peak memory is its own
(CPU: peak RSS; CUDA: torch.cuda.max_memory_allocated).

usage: python bench/bench_pccl.py [--steps 3] [--batch 8] [--size 224]
"""

import argparse
import json
import resource
import subprocess
import sys
import time

from common import print_header, save_json, table

VARIANTS = ('baseline: 2 student forwards', 'pccl_losses: 1 batched forward')


def baseline_losses(student, teacher, rgb, ir, loss_fn, gamma=0.6):
    """PCCL losses with the student run once per modality (two forwards)."""
    from univ_core.losses.pccl import attention_positives
    from univ_core.models.backbone import tokens_and_last_attention

    teacher_tokens, attention = tokens_and_last_attention(teacher, rgb)  # (B,N,D), (B,N,N)
    labels = attention_positives(attention, gamma)
    loss_ir = loss_fn(student(ir), teacher_tokens, labels)
    loss_rgb = loss_fn(student(rgb), teacher_tokens, labels)
    return {'loss': loss_ir + loss_rgb}


def run_variant(variant: int, steps: int, batch: int, size: int, device: str) -> dict:
    """Time ``steps`` optimiser steps (after one warm-up step) in this process."""
    import torch

    from univ_core.losses.pccl import PCCLLoss
    from univ_core.train.pccl_task import pccl_losses
    from univ_core.train.pretrain import PretrainConfig, build_models

    torch.manual_seed(0)
    dev = torch.device(device)
    cfg = PretrainConfig(sources=[{'root': '.'}], img_size=size, batch_size=batch)
    teacher, student = build_models(cfg, dev)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    loss_fn = PCCLLoss(cfg.temperature)
    rgb = torch.randn(batch, 3, size, size, device=dev)
    ir = torch.randn(batch, 3, size, size, device=dev)
    step_fn = baseline_losses if variant == 0 else pccl_losses
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        losses = step_fn(student, teacher, rgb, ir, loss_fn)
        optimizer.zero_grad(set_to_none=True)
        losses['loss'].backward()
        optimizer.step()
        if dev.type == 'cuda':
            torch.cuda.synchronize()
        if step:  # step 0 is the warm-up
            times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if dev.type == 'cuda'
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {'step_s': sorted(times)[len(times) // 2], 'peak_mb': peak,
            'loss': float(losses['loss'])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=3)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--child', type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument('--json', default=None)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(run_variant(args.child, args.steps, args.batch, args.size, args.device)))
        return 0
    info = print_header(f'PCCL pre-training step, {args.size}x{args.size}, batch {args.batch}')
    results = {}
    for index, name in enumerate(VARIANTS):
        command = [sys.executable, __file__, '--child', str(index), '--steps', str(args.steps),
                   '--batch', str(args.batch), '--size', str(args.size), '--device', args.device]
        ran = subprocess.run(command, capture_output=True, text=True, check=True)
        results[name] = json.loads(ran.stdout.strip().splitlines()[-1])
    base = results[VARIANTS[0]]
    rows = []
    for name, r in results.items():
        r['pairs_per_s'] = args.batch / r['step_s']
        r['speedup'] = base['step_s'] / r['step_s']
        rows.append([name, r['step_s'], r['pairs_per_s'], f'{r["speedup"]:.2f}x', r['peak_mb'],
                     r['loss']])
    print(f'device {args.device}; median of {args.steps} steps after 1 warm-up step; peak = '
          f'{"max allocated" if args.device.startswith("cuda") else "process peak RSS"}\n')
    print(table(['variant', 's/step', 'pairs/s', 'speed-up', 'peak MB', 'loss'], rows))
    same = abs(results[VARIANTS[0]]['loss'] - results[VARIANTS[1]]['loss'])
    print(f'\n|loss difference| between variants (same seed and batch): {same:.2g}')
    save_json(args.json, {'machine': info, 'results': results})
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
