"""`univ eval-alignment`: label-free IR -> RGB patch alignment on aligned pairs.

For a backbone under test (the student: a UNIV merged export, or the teacher itself as the
baseline) and the frozen RGB teacher:
- retrieval: each IR patch token of the model looks up its nearest teacher RGB patch token of the
  same image by cosine; rates of hitting the same cell (top-1) and a cell at most one step away
  (within-one: Chebyshev distance <= 1 on the patch grid);
- cosine gap: mean cosine of aligned (IR i, RGB i) pairs minus that of random other cells;
- RGB retention: mean cosine between the model's and the teacher's RGB tokens at the same cell.
"""

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from univ_core.data.paired import PairedRgbtDataset, PairPaths
from univ_core.models.backbone import PatchEncoder, create_backbone


@dataclass
class AlignmentMetrics:
    """Averages over all patches of all pairs."""

    top1: float  # IR patch -> nearest teacher RGB patch is the same cell
    within_one: float  # ... is the same cell or one of its 8 neighbours
    aligned_cos: float  # cos(model IR token i, teacher RGB token i)
    random_cos: float  # cos(model IR token i, teacher RGB token j), j a random other cell
    cos_gap: float  # aligned_cos - random_cos
    rgb_retention: float  # cos(model RGB token i, teacher RGB token i)
    pairs: int  # image pairs measured


def batch_alignment(ir_tokens: torch.Tensor, rgb_tokens: torch.Tensor,
                    teacher_tokens: torch.Tensor, grid: tuple[int, int],
                    generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-image sums of the metrics.

    Args:
        ir_tokens: (B, N, D) model tokens of the IR images.
        rgb_tokens: (B, N, D) model tokens of the RGB images.
        teacher_tokens: (B, N, D) teacher tokens of the RGB images.
        grid: (rows, cols) with rows * cols == N.
        generator: draws the random other cells.

    Returns:
        Sums over patches (not yet divided) of each metric, keyed like AlignmentMetrics.
    """
    b, n, _ = ir_tokens.shape
    ir, rgb, tea = (F.normalize(t.float(), dim=-1)
                    for t in (ir_tokens, rgb_tokens, teacher_tokens))
    sim = ir @ tea.transpose(1, 2)  # (B, N, N): IR query i vs teacher RGB key j
    best = sim.argmax(dim=-1)  # (B, N)
    cell = torch.arange(n).expand(b, n)
    rows, cols = grid
    dist = torch.maximum((best // cols - cell // cols).abs(), (best % cols - cell % cols).abs())
    other = (cell + torch.randint(1, n, (b, n), generator=generator)) % n  # never the same cell
    aligned = sim.diagonal(dim1=1, dim2=2)  # (B, N)
    return {
        'top1': (dist == 0).float().sum(), 'within_one': (dist <= 1).float().sum(),
        'aligned_cos': aligned.sum(), 'random_cos': sim.gather(2, other[..., None]).sum(),
        'rgb_retention': (rgb * tea).sum(-1).sum(),
    }


@torch.no_grad()
def evaluate_alignment(model: PatchEncoder, teacher: PatchEncoder, pairs: list[PairPaths],
                       size: int = 224, batch_size: int = 4, seed: int = 0) -> AlignmentMetrics:
    """Alignment metrics of ``model`` against ``teacher`` on ``pairs`` (deterministic)."""
    if not pairs:
        raise ValueError('evaluate_alignment: no pairs given')
    dataset = PairedRgbtDataset(pairs, size=size, train=False, seed=seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    teacher.eval()
    sums: dict[str, float] = {}
    patches = 0
    for batch in tqdm(loader, desc='eval-alignment', unit='batch', leave=False):
        rgb, ir = batch['rgb'], batch['ir']
        tokens = model(torch.cat([rgb, ir]))  # (2B, N, D)
        rgb_tokens, ir_tokens = tokens.chunk(2)
        grid = model.grid_size(*rgb.shape[-2:])
        for k, v in batch_alignment(ir_tokens, rgb_tokens, teacher(rgb), grid, generator).items():
            sums[k] = sums.get(k, 0.0) + v.item()
        patches += ir_tokens.shape[0] * ir_tokens.shape[1]
    m = {k: v / patches for k, v in sums.items()}
    return AlignmentMetrics(**m, cos_gap=m['aligned_cos'] - m['random_cos'], pairs=len(dataset))


def load_heldout(path: Path) -> list[PairPaths]:
    """Held-out pairs recorded by ``univ pretrain`` (``pairs.json``)."""
    if not path.is_file():
        raise FileNotFoundError(f'pairs file not found: {path} (written by univ pretrain)')
    held = json.loads(path.read_text()).get('heldout', [])
    return [PairPaths(rgb=Path(r), ir=Path(i), name=Path(r).stem) for r, i in held]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI flags of ``univ eval-alignment``."""
    parser.add_argument('--pairs', type=Path, required=True, help="pretrain run's pairs.json")
    parser.add_argument('--checkpoint', type=Path, help='UNIV merged backbone (safetensors)')
    parser.add_argument('--arch', default='vit_small_patch14_dinov2')
    parser.add_argument('--teacher-weights', default='default')
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--out', type=Path, help='write the metrics as JSON here')


def main(args: argparse.Namespace) -> int:
    """Print teacher (baseline) and, with --checkpoint, UNIV metrics side by side."""
    pairs = load_heldout(args.pairs)
    teacher = PatchEncoder(create_backbone(args.arch, args.teacher_weights))
    results = {'teacher': evaluate_alignment(teacher, teacher, pairs, args.size)}
    if args.checkpoint:
        model = PatchEncoder(create_backbone(args.arch, str(args.checkpoint)))
        results['univ'] = evaluate_alignment(model, teacher, pairs, args.size)
    print(f'{"metric":<14}' + ''.join(f'{name:>10}' for name in results))
    for key in asdict(results['teacher']):
        print(f'{key:<14}' + ''.join(f'{getattr(r, key):>10.4f}' for r in results.values()))
    if args.out:
        from univ_core.train.checkpoint import write_json

        write_json(args.out, {k: asdict(v) for k, v in results.items()})
    return 0
