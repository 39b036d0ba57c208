"""`univ pretrain`: PCCL pre-training of a LoRA student against a frozen RGB teacher.

Runs on one CPU/GPU or under ``torchrun`` (DDP: NCCL on GPU, gloo on CPU). LoRA is injected
before DDP wraps the student, so LoRA gradients are all-reduced (the official script wraps first).
"""

import argparse
import copy
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from univ_core.data.evaluation_pairs import is_evaluation_pair
from univ_core.data.home import data_home
from univ_core.data.paired import PairedRgbtDataset, find_pairs, split_holdout
from univ_core.data.transforms import as_hw
from univ_core.losses.pccl import PCCLLoss
from univ_core.models.backbone import PatchEncoder, create_backbone
from univ_core.models.lora import (
    LoraSettings,
    add_lora,
    load_lora_strict,
    lora_state,
    merge_lora,
    trainable_fraction,
)
from univ_core.train.checkpoint import load_state, save_safetensors, save_state, write_json
from univ_core.train.config import load_config, to_dict
from univ_core.train.grad_clip import CLIP_MODES, clip_gradients
from univ_core.train.pccl_task import pccl_losses
from univ_core.train.schedules import cosine_schedule


@dataclass
class DataSource:
    """One paired dataset folder in its native layout."""

    root: str  # folder; relative paths are taken from the config file's folder
    layout: str = 'auto'  # llvip | roadscene | msrs | m3fd | flir_aligned | kaist | mfnet | folder
    split: str | None = None  # e.g. 'train' where the layout has splits


@dataclass
class PretrainConfig:
    """PCCL pre-training (defaults: the paper's recipe, at CPU-friendly scale where noted)."""

    arch: str = 'vit_small_patch14_dinov2'  # timm name of teacher and student
    weights: str = 'default'  # 'default' | 'hub' | 'none' | checkpoint path
    backbone_overrides: dict = field(default_factory=dict)  # extra timm args (toy tests)
    sources: list[DataSource] = field(default_factory=list)  # combined MVIP-style
    holdout: int = 0  # pairs per source held out (never trained on) for eval-alignment
    exclude: list[str] = field(default_factory=list)  # more pair names never trained on
    img_size: int | tuple[int, int] = 224  # shared random-resized-crop output: S or (H, W)
    batch_size: int = 8  # per process
    epochs: int = 400  # passes over the data
    warmup_epochs: int = 40  # linear lr warm-up
    max_steps: int | None = None  # stop early after this many steps (schedules keep epochs)
    max_minutes: float | None = None  # stop (checkpoint + export) once this much time passed
    lr: float = 1.5e-4  # base lr, scaled by global batch / 256
    min_lr: float = 1e-6  # final cosine lr
    weight_decay: float = 0.05  # start of the cosine weight-decay schedule
    weight_decay_end: float = 0.5  # end of the weight-decay schedule
    clip_grad: float = 3.0  # max grad norm (0: off)
    # 'param': each parameter's gradient clipped to norm clip_grad on its own (the official
    # code, DINO's clip_gradients); 'global': one norm over all LoRA gradients (a deviation).
    clip_mode: str = 'param'
    gamma: float = 0.6  # attention mass kept as positives
    temperature: float = 0.04  # cosine / temperature logits
    ir_weight: float = 1.0  # alpha: cross-modal IR loss
    rgb_weight: float = 1.0  # beta: synchronous RGB distillation
    anchor_weight: float = 0.0  # 1 - cos(student RGB, teacher RGB) term; 0 = official UNIV
    center_tokens: bool = False  # PCCL on per-image centred tokens (PCCLLoss); False = official
    lora: LoraSettings = field(default_factory=LoraSettings)
    amp: bool = True  # fp16 autocast + GradScaler (CUDA only)
    seed: int = 7  # everything random derives from it
    num_workers: int = 2  # DataLoader workers
    out_dir: str = 'runs/pretrain'  # checkpoints, logs, exported weights
    checkpoint_every: int = 50  # steps between atomic checkpoints
    snapshot_every: int = 0  # also keep the LoRA tensors every N steps (lora_stepNNNNN)
    device: str = 'auto'  # auto | cpu | cuda | cuda:N

    def __post_init__(self) -> None:
        self.sources = [s if isinstance(s, DataSource) else DataSource(**s) for s in self.sources]
        if not self.sources:
            raise ValueError('pretrain config: `sources` is empty; list at least one data folder')
        if self.batch_size < 1 or self.epochs < 1 or not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError('pretrain config: need batch_size >= 1, 0 <= warmup_epochs <= epochs')
        if self.clip_mode not in CLIP_MODES:
            raise ValueError(f'pretrain config: clip_mode must be one of {CLIP_MODES}, got '
                             f'{self.clip_mode!r}')
        self.img_size = as_hw(self.img_size)
        self.lora = self.lora.for_arch(self.arch)  # explicit targets in checkpoints and logs
        if self.max_steps is not None and self.max_steps < 1:  # 0 read as "no limit" before
            raise ValueError(f'pretrain config: max_steps must be >= 1 (or unset: the whole '
                             f'schedule), got {self.max_steps}')
        if not 0 < self.gamma < 1:
            raise ValueError(f'pretrain config: gamma must be in (0, 1), got {self.gamma}')


def build_pairs(cfg: PretrainConfig, base: Path) -> tuple[list, list]:
    """(train pairs, held-out pairs) over all sources; held-out pairs are stable across runs.

    The evaluation pairs (:mod:`univ_core.data.evaluation_pairs`) never train, whatever the
    config's ``exclude`` says: every downstream score is measured on them.
    """
    train, held = [], []
    for src in cfg.sources:
        root = Path(os.path.expandvars(src.root.replace('${UNIV_DATA}', str(data_home()))))
        root = root if root.is_absolute() else base / root
        pairs = find_pairs(root, src.layout, src.split)
        t, h = split_holdout(pairs, cfg.holdout, seed=cfg.seed) if cfg.holdout else (pairs, [])
        train += t
        held += h
    excluded = set(cfg.exclude)  # after the holdout split: it stays the same with or without
    return [p for p in train if p.name not in excluded and not is_evaluation_pair(p.name)], held


def batches_for_epoch(n: int, batch: int, epoch: int, seed: int, rank: int, world: int):
    """This rank's index batches for ``epoch``: a seeded permutation, sharded, drop_last."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    mine = order[: n - n % world][rank::world].tolist()
    return [mine[i: i + batch] for i in range(0, len(mine) - batch + 1, batch)]


def build_models(cfg: PretrainConfig, device: torch.device):
    """Frozen teacher and LoRA student, both from the same weights."""
    teacher = PatchEncoder(create_backbone(cfg.arch, cfg.weights, **cfg.backbone_overrides))
    teacher = teacher.to(device).eval()
    # Frozen once here: the teacher only provides targets and labels, it is never updated.
    teacher.requires_grad_(False)
    # The student starts as an exact copy of the teacher (same weights, same random init).
    student = add_lora(copy.deepcopy(teacher).train().requires_grad_(True), cfg.lora,
                       cfg.arch).to(device)
    return teacher, student


def setup_distributed(device: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); initialises the process group under torchrun."""
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group('nccl' if device.startswith('cuda') else 'gloo')
    rank = dist.get_rank() if world > 1 else 0
    if device == 'cuda':
        device = f'cuda:{int(os.environ.get("LOCAL_RANK", "0"))}'
    return rank, world, torch.device(device)


def out_of_time(t0: float, minutes: float, world: int, device: torch.device) -> bool:
    """Whether any rank has used up ``minutes`` (all ranks get the same answer)."""
    # On ``device``: NCCL all-reduces CUDA tensors only.
    late = torch.tensor([float(time.perf_counter() - t0 > 60 * minutes)], device=device)
    if world > 1:
        dist.all_reduce(late, op=dist.ReduceOp.MAX)
    return bool(late.item())


class _EpochView(torch.utils.data.Dataset):
    """The dataset as seen in one epoch: augmentation seeded by (seed, epoch, index)."""

    def __init__(self, dataset: PairedRgbtDataset, epoch: int) -> None:
        self.dataset, self.epoch = dataset, epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.dataset.sample(index, epoch=self.epoch)


def save_checkpoint(out: Path, step: int, student, optimizer, scaler, cfg) -> None:
    """Atomic resumable state: LoRA tensors, optimiser, scaler and RNG (CPU and CUDA)."""
    save_state(out / 'last.pt', {
        'step': step, 'lora': {k: v.cpu() for k, v in lora_state(student).items()},
        'optimizer': optimizer.state_dict(), 'scaler': scaler.state_dict(),
        'rng': torch.get_rng_state(), 'config': to_dict(cfg),
        'cuda_rng': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    })


def export_merged(out: Path, student, cfg: PretrainConfig, step: int) -> Path:
    """LoRA merged into a plain timm state dict: ``timm.create_model(arch)`` loads it strictly."""
    backbone = merge_lora(student).backbone
    meta = {'format': 'univ-merged', 'arch': cfg.arch, 'step': str(step)}
    return save_safetensors(out / 'univ_backbone.safetensors', backbone.state_dict(), meta)


def train(cfg: PretrainConfig, base: Path = Path('.'), resume: bool = False):
    """Run PCCL pre-training; returns the LoRA student (unwrapped)."""
    rank, world, device = setup_distributed(cfg.device)
    torch.manual_seed(cfg.seed + rank)
    out = Path(cfg.out_dir)
    train_pairs, held = build_pairs(cfg, base)
    dataset = PairedRgbtDataset(train_pairs, size=cfg.img_size, train=True, seed=cfg.seed)
    teacher, student = build_models(cfg, device)
    model = DistributedDataParallel(student) if world > 1 else student  # after LoRA injection
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    per_epoch = len(batches_for_epoch(len(dataset), cfg.batch_size, 0, cfg.seed, rank, world))
    if per_epoch == 0:
        raise ValueError(f'{len(dataset)} training pairs < batch_size x world '
                         f'({cfg.batch_size} x {world})')
    total = cfg.epochs * per_epoch
    lrs = cosine_schedule(cfg.lr * cfg.batch_size * world / 256, cfg.min_lr, total,
                          cfg.warmup_epochs * per_epoch)
    wds = cosine_schedule(cfg.weight_decay, cfg.weight_decay_end, total)
    use_amp = cfg.amp and device.type == 'cuda'
    scaler = torch.amp.GradScaler('cuda', enabled=use_amp)
    step = 0
    if resume and (out / 'last.pt').is_file():
        state = load_state(out / 'last.pt')
        load_lora_strict(student, state['lora'], str(out / 'last.pt'))
        optimizer.load_state_dict(state['optimizer'])
        scaler.load_state_dict(state['scaler'])
        torch.set_rng_state(state['rng'])
        if state.get('cuda_rng') and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state['cuda_rng'])
        step = state['step']
    last = total if cfg.max_steps is None else min(total, cfg.max_steps)
    loss_fn = PCCLLoss(cfg.temperature, center=cfg.center_tokens)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / 'config.json', to_dict(cfg))
        write_json(out / 'pairs.json', {'train': [p.name for p in train_pairs],
                                        'heldout': [[str(p.rgb), str(p.ir)] for p in held]})
        trainable, everything = trainable_fraction(student)
        print(f'pretrain: {len(dataset)} pairs, {world} process(es) on {device}, LoRA trains '
              f'{trainable:,}/{everything:,} parameters ({100 * trainable / everything:.2f} %)')
    log = (out / 'log.jsonl').open('a') if rank == 0 else None
    bar = tqdm(total=last, initial=step, disable=rank != 0, desc='pretrain', unit='step')
    t0 = time.perf_counter()
    while step < last:
        epoch, offset = divmod(step, per_epoch)
        batches = batches_for_epoch(len(dataset), cfg.batch_size, epoch, cfg.seed, rank, world)
        loader = torch.utils.data.DataLoader(
            _EpochView(dataset, epoch), batch_sampler=batches[offset:],
            num_workers=cfg.num_workers, generator=torch.Generator().manual_seed(epoch))
        for batch in loader:
            for group in optimizer.param_groups:
                group['lr'], group['weight_decay'] = lrs[step], wds[step]
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                losses = pccl_losses(model, teacher, batch['rgb'].to(device),
                                     batch['ir'].to(device), loss_fn, cfg.gamma,
                                     cfg.ir_weight, cfg.rgb_weight, cfg.anchor_weight)
            if not math.isfinite(losses['loss'].item()):
                raise FloatingPointError(f'loss is {losses["loss"].item()} at step {step}; '
                                         f'last good checkpoint: {out / "last.pt"}')
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses['loss']).backward()
            scaler.unscale_(optimizer)
            if cfg.clip_grad:
                clip_gradients(params, cfg.clip_grad, cfg.clip_mode)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            bar.update(1)
            if log:
                row = {'step': step, 'epoch': epoch, 'lr': lrs[step - 1], 'wd': wds[step - 1],
                       'time_s': round(time.perf_counter() - t0, 2),
                       **{k: round(v.item(), 6) for k, v in losses.items()}}
                log.write(json.dumps(row) + '\n')
                log.flush()
                bar.set_postfix(loss=f'{row["loss"]:.4f}')
            if cfg.max_minutes and out_of_time(t0, cfg.max_minutes, world, device):
                last = step  # every rank stops after this same step
            if rank == 0 and (step % cfg.checkpoint_every == 0 or step == last):
                save_checkpoint(out, step, student, optimizer, scaler, cfg)
            if rank == 0 and cfg.snapshot_every and step % cfg.snapshot_every == 0:
                save_safetensors(out / f'lora_step{step:05d}.safetensors',
                                 lora_state(student),
                                 {'format': 'univ-lora', 'arch': cfg.arch, 'step': str(step)})
            if step >= last:
                break
    bar.close()
    if rank == 0:
        path = export_merged(out, student, cfg, step)
        print(f'pretrain: merged backbone -> {path}')
    if world > 1:
        dist.barrier()
    return student


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI flags of ``univ pretrain``."""
    parser.add_argument('--config', type=Path, required=True, help='YAML (PretrainConfig fields)')
    parser.add_argument('--resume', action='store_true', help='continue from OUT_DIR/last.pt')
    parser.add_argument('overrides', nargs='*', help='key=value overrides, e.g. max_steps=100')


def main(args: argparse.Namespace) -> int:
    """Entry point of ``univ pretrain``."""
    cfg = load_config(PretrainConfig, args.config, args.overrides)
    train(cfg, base=args.config.resolve().parent, resume=args.resume)
    return 0
