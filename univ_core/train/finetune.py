"""`univ finetune {seg,det,det+seg}`: train segmentation / detection heads on a backbone.

Head-only training (``freeze_backbone``, the default, practical on a CPU) computes the frozen
backbone's feature maps once per training view (:mod:`univ_core.train.views`) and trains the
pyramid + heads on them; ``det+seg`` trains both heads on one pyramid with the losses summed.
Full fine-tuning runs the backbone every step with layer-wise lr decay (paper: AdamW 1e-4,
decay 0.75). With ``backbone: univ`` (the embedded teacher + the shipped UNIV adapter) and a
frozen backbone, the model file is written compact: fp16 heads + the adapter's LoRA delta.
"""

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from univ_core.data.home import data_home
from univ_core.data.thermal import ThermalNorm
from univ_core.inference.preprocess import Preprocessor
from univ_core.models.heads import balanced_class_weights
from univ_core.models.model_file import DEFAULT_INPUT_SIZE, ModelSpec, build_model, save_model
from univ_core.models.univ_weights import UNIV_ADAPTER, read_lora
from univ_core.models.weights import DEFAULT_ARCH
from univ_core.train.checkpoint import json_safe, load_state, save_state, write_json
from univ_core.train.config import load_config, to_dict
from univ_core.train.downstream_data import MODALITIES, Split, open_split
from univ_core.train.schedules import cosine_schedule
from univ_core.train.views import training_views, view_windows

TASKS = ('det', 'seg', 'det+seg')


@dataclass
class FinetuneConfig:
    """Downstream head training."""

    task: str = 'det'  # det | seg | det+seg (one pyramid, both heads, losses summed)
    modality: str = 'both'  # rgb | ir | both: whose images and labels train the heads
    data: Split = field(default_factory=lambda: Split(root=str(data_home() / 'msrs_mini')))
    arch: str = DEFAULT_ARCH  # timm backbone name
    backbone: str = 'default'  # 'default' | 'univ' | 'hub' | 'none' | backbone file
    backbone_overrides: dict = field(default_factory=dict)  # extra timm args (toy tests)
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE  # (H, W), multiples of the patch size
    head_channels: int = 64  # pyramid/head width (multiple of 32; the paper uses 256+)
    freeze_backbone: bool = True  # head only (features cached) vs full fine-tuning
    views: int = 1  # cached views per image: the frame, its mirror, then random crops
    crop_scale: tuple[float, float] = (0.5, 1.0)  # side fraction of the random-crop views
    seg_class_balance: float = 0.0  # seg pixel weight count**-p per class (0: all alike)
    # after training, seg logits shifted by -tau * log(class weight) (logit adjustment): the
    # weighted loss learns p(class | pixel) * weight, over-predicting the rare classes; 1 undoes
    # the weights' effect on decisions, 0 keeps it (no effect without seg_class_balance)
    seg_prior_correction: float = 0.0
    epochs: int = 30  # passes over the training images
    batch_size: int = 4  # images per step
    lr: float = 1e-3  # peak lr (heads); full fine-tuning: 1e-4
    layer_decay: float = 0.75  # backbone block i gets lr * decay^(depth - i) (full fine-tuning)
    weight_decay: float = 0.05  # AdamW
    warmup_steps: int = 20  # linear lr warm-up
    seed: int = 0  # init, data order
    out_dir: str = 'runs/finetune'  # model.safetensors, last.pt, log.jsonl, summary.json
    checkpoint_every: int = 100  # steps between atomic resumable checkpoints
    device: str = 'auto'  # auto | cpu | cuda

    def __post_init__(self) -> None:
        if isinstance(self.data, dict):
            self.data = Split(**self.data)
        self.input_size = tuple(self.input_size)
        if self.task not in TASKS or self.modality not in MODALITIES:
            raise ValueError(f'finetune: task must be one of {TASKS} and modality rgb|ir|both, '
                             f'got {self.task!r}, {self.modality!r}')
        if not 0 <= self.seg_prior_correction <= 1:
            raise ValueError(f'finetune: seg_prior_correction must be in 0..1, got '
                             f'{self.seg_prior_correction}')
        if self.views < 1 or (self.views > 1 and not self.freeze_backbone):
            raise ValueError('finetune: views >= 1, and views > 1 only with freeze_backbone '
                             '(cached maps)')


def param_groups(model: torch.nn.Module, cfg: FinetuneConfig) -> list[dict]:
    """AdamW groups: heads at ``lr``; backbone block i at lr * decay^(depth + 1 - i)."""
    blocks = getattr(model.backbone, 'blocks', [])
    depth = len(blocks)
    groups: dict[float, list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if not name.startswith('backbone.'):
            scale = 1.0
        elif name.startswith('backbone.blocks.'):
            scale = cfg.layer_decay ** (depth - int(name.split('.')[2]))
        elif name.startswith('backbone.norm'):
            scale = 1.0
        else:  # patch/position embeddings and stem: the deepest decay
            scale = cfg.layer_decay ** (depth + 1)
        groups.setdefault(scale, []).append(p)
    return [{'params': ps, 'lr_scale': s, 'weight_decay': cfg.weight_decay}
            for s, ps in groups.items()]


def training_samples(model, data, cfg: FinetuneConfig, prep: Preprocessor, device,
                     quiet: bool = False) -> list:
    """(input or cached fp16 backbone maps, targets) per training view of each image."""
    samples = []
    for index in tqdm(range(len(data)), desc='prepare', unit='pair', leave=False, disable=quiet):
        sample = data[index]
        h, w = sample['thermal'].shape[:2]
        windows = list(view_windows(h, w, cfg.views, cfg.input_size, cfg.crop_scale,
                                    seed=cfg.seed * 100_003 + index))
        for modality in MODALITIES[cfg.modality]:
            for x, targets in training_views(sample, modality, windows, prep):
                if cfg.freeze_backbone:
                    with torch.no_grad():  # frozen: the maps never change, compute them once
                        x = _half(model.backbone_maps(x.to(device)))
                samples.append((x, targets))
    return samples


def _half(maps: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """Cached maps in fp16 (half the memory; the heads train in fp32 on them)."""
    return [m.half() for m in maps] if isinstance(maps, list) else maps.half()


def seg_class_weights(samples: list, cfg: FinetuneConfig, num_classes: int
                      ) -> torch.Tensor | None:
    """(K,) segmentation class weights from the training views' pixels, or None (unweighted)."""
    if 'seg' not in cfg.task or cfg.seg_class_balance == 0:
        return None
    counts = sum(torch.bincount(t['mask'][t['mask'] < num_classes].flatten().long(),
                                minlength=num_classes) for _, t in samples)
    return balanced_class_weights(counts, cfg.seg_class_balance)


@torch.no_grad()
def correct_seg_prior(seg_head: torch.nn.Module, class_weights: torch.Tensor,
                      strength: float) -> None:
    """Logit adjustment (Menon et al., 2021) folded into the classifier's bias, in place.

    Cross-entropy with per-class pixel weights ``w`` is minimised by logits of
    ``log(w_c * p(c | pixel))``; subtracting ``strength * log(w_c)`` moves each decision back
    towards the unweighted prior by that fraction (bilinear upsampling commutes with it).

    Args:
        seg_head: a head whose last layer is ``classifier`` (a conv with a (K,) bias).
        class_weights: (K,) positive training weights (:func:`seg_class_weights`).
        strength: tau in [0, 1].
    """
    bias = seg_head.classifier.bias
    bias -= strength * class_weights.to(bias).log()


def step_losses(model, batch: list, cfg: FinetuneConfig, device,
                class_weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The task's losses on a list of (input or maps, targets); class_weights on ``device``."""
    xs = [x for x, _ in batch]
    if isinstance(xs[0], torch.Tensor):
        inputs = torch.cat(xs).to(device).float()  # images (B,3,h,w) or ViT maps (B,D,h',w')
    else:  # ConvMAE: a list of stage maps per sample
        inputs = [torch.cat(level).to(device).float() for level in zip(*xs, strict=True)]
    kwargs = {}
    if 'det' in cfg.task:
        kwargs['det_targets'] = [{'boxes': t['boxes'].to(device),
                                  'labels': t['labels'].to(device)} for _, t in batch]
    if 'seg' in cfg.task:
        kwargs['seg_targets'] = torch.stack([t['mask'] for _, t in batch]).to(device)
        kwargs['seg_class_weights'] = class_weights
    if cfg.freeze_backbone:
        return model.losses(None, maps=inputs, **kwargs)
    return model.losses(inputs, **kwargs)


def finetune(cfg: FinetuneConfig, resume: bool = False, quiet: bool = False) -> Path:
    """Train the heads; returns the UNIV model file (backbone + heads + spec)."""
    device = torch.device('cuda' if cfg.device == 'auto' and torch.cuda.is_available()
                          else 'cpu' if cfg.device == 'auto' else cfg.device)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    train_data, _ = open_split(cfg.data)
    spec = model_spec(cfg, train_data)
    model = build_model(spec, cfg.backbone).to(device)
    if cfg.freeze_backbone:
        model.freeze_backbone()
    prep = Preprocessor(cfg.input_size, ThermalNorm(), device)
    samples = training_samples(model, train_data, cfg, prep, device, quiet)
    class_weights = seg_class_weights(samples, cfg, len(spec.seg_classes or []))
    if class_weights is not None:
        class_weights = class_weights.to(device)  # once, not per step
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr)
    per_epoch = max(len(samples) // cfg.batch_size, 1)
    total = cfg.epochs * per_epoch
    lrs = cosine_schedule(cfg.lr, cfg.lr * 0.01, total, min(cfg.warmup_steps, total))
    step = 0
    if resume and (out / 'last.pt').is_file():
        check_resumable(out, cfg)
        state = load_state(out / 'last.pt')
        model.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
        torch.set_rng_state(state['rng'])
        step = state['step']
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / 'config.json', to_dict(cfg))
    model.train()
    t0, final_loss = time.perf_counter(), None  # None: resumed a finished run, no new step
    with (out / 'log.jsonl').open('a') as log:
        bar = tqdm(total=total, initial=step, desc=f'finetune {cfg.task}/{cfg.modality}',
                   unit='step', disable=quiet)
        while step < total:
            epoch, offset = divmod(step, per_epoch)
            order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(
                cfg.seed * 100_003 + epoch)).tolist()
            for i in range(offset, per_epoch):
                batch = [samples[j] for j in order[i * cfg.batch_size:(i + 1) * cfg.batch_size]]
                for group in optimizer.param_groups:
                    group['lr'] = lrs[step] * group['lr_scale']
                losses = step_losses(model, batch, cfg, device, class_weights)
                loss = sum(losses.values())
                if not torch.isfinite(loss):
                    raise FloatingPointError(f'loss is {loss.item()} at step {step}')
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                bar.update(1)
                row = {'step': step, 'epoch': epoch, 'lr': lrs[step - 1], 'loss': loss.item(),
                       'time_s': round(time.perf_counter() - t0, 2),
                       **{k: round(v.item(), 5) for k, v in losses.items()}}
                log.write(json.dumps(row) + '\n')
                final_loss = row['loss']
                bar.set_postfix(loss=f'{final_loss:.3f}')
                if step % cfg.checkpoint_every == 0 or step == total:
                    save_state(out / 'last.pt', {
                        'step': step, 'model': model.state_dict(), 'rng': torch.get_rng_state(),
                        'optimizer': optimizer.state_dict()})
        bar.close()
    lora = None
    if cfg.backbone == 'univ' and cfg.freeze_backbone:  # compact: heads + the adapter's delta
        lora, _, settings, _ = read_lora(UNIV_ADAPTER)
        spec.lora = {**vars(settings), 'target_modules': list(settings.target_modules)}
    elif cfg.backbone == 'default' and cfg.freeze_backbone:  # compact: heads; teacher at load
        spec.backbone = 'default'

    if class_weights is not None:  # the saved file only; last.pt keeps the trained bias
        correct_seg_prior(model.seg_head, class_weights, cfg.seg_prior_correction)
    path = save_model(out / 'model.safetensors', model.eval(), spec, lora)
    write_json(out / 'summary.json', {
        'model': str(path), 'steps': step, 'samples': len(samples),
        'det_classes': spec.det_classes, 'seg_classes': spec.seg_classes,
        'final_loss': final_loss,
        'seg_class_weights': None if class_weights is None else class_weights.tolist(),
        'seconds': round(time.perf_counter() - t0, 1)})
    return path


# settings a resumed run may change: where it writes and runs, not what it trains
RESUME_MAY_CHANGE = ('out_dir', 'device', 'checkpoint_every')


def check_resumable(out: Path, cfg: FinetuneConfig) -> None:
    """Refuse to resume ``out`` with settings other than its ``config.json``'s.

    The loaded heads would silently stand for the new settings (e.g. another backbone).
    """
    path = out / 'config.json'
    saved = json.loads(path.read_text()) if path.is_file() else {}
    now = json.loads(json.dumps(json_safe(to_dict(cfg))))  # as config.json holds it
    changed = sorted(k for k in set(saved) | set(now)
                     if k not in RESUME_MAY_CHANGE and saved.get(k) != now.get(k))
    if changed:
        raise ValueError(f'{out}: resuming a run trained with other settings ({", ".join(changed)}'
                         f' differ from {path}); use a new out_dir, or delete {out}')


def model_spec(cfg: FinetuneConfig, data) -> ModelSpec:
    """The model file's spec: the task's heads named by the data's classes."""
    seg = data.seg_class_names or data.class_names
    if 'seg' in cfg.task and cfg.task != 'seg' and not data.seg_class_names:
        raise ValueError(f'task {cfg.task}: {cfg.data.root} has no masks (use format autolabel)')
    return ModelSpec(cfg.arch, seg if 'seg' in cfg.task else None,
                     data.class_names if 'det' in cfg.task else None, cfg.input_size,
                     cfg.head_channels, dict(cfg.backbone_overrides),
                     data.palette if 'seg' in cfg.task else None)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI flags of ``univ finetune``."""
    parser.add_argument('task', choices=TASKS)
    parser.add_argument('--modality', choices=list(MODALITIES), default=None)
    parser.add_argument('--config', type=Path, help='YAML (FinetuneConfig fields)')
    parser.add_argument('--resume', action='store_true', help='continue from OUT_DIR/last.pt')
    parser.add_argument('overrides', nargs='*', help='key=value, e.g. backbone=runs/x.safetensors')


def main(args: argparse.Namespace) -> int:
    """Entry point of ``univ finetune``."""
    overrides = [f'task={args.task}', *args.overrides]
    if args.modality:
        overrides.append(f'modality={args.modality}')
    cfg = load_config(FinetuneConfig, args.config, overrides)
    if args.resume and not (Path(cfg.out_dir) / 'last.pt').is_file():
        raise FileNotFoundError(f'--resume: no {Path(cfg.out_dir) / "last.pt"} to resume')
    print(f'finetune: model -> {finetune(cfg, resume=args.resume)}')
    return 0
