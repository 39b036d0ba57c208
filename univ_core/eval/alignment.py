"""`univ eval-alignment`: label-free IR -> RGB patch alignment on held-out aligned pairs.

For a backbone under test (the student: ``univ`` or a merged export; the teacher as baseline)
and the frozen RGB teacher, at any H x W (default: the node's model input):

- retrieval in the teacher's space: each IR patch token of the model looks up its nearest
  teacher RGB token of the same image by cosine; rates of the same cell (top-1) and of a cell at
  most one step away (within-one, Chebyshev <= 1);
- retrieval in the model's own space (its IR vs its RGB tokens): what a head shared by both
  modalities relies on;
- each minus the same retrieval against the RGB image of an UNRELATED scene: patch position
  alone (positional embeddings) gives a hit rate that has nothing to do with content, so the
  scene-dependent part is retrieval minus this control;
- aligned - random cosine gap (both spaces); raw cosine and linear CKA between the model's and
  the teacher's RGB tokens (RGB preservation, the second offset-invariant); linear CKA between
  the model's IR and RGB tokens; RGB -> RGB retrieval (model RGB vs teacher RGB).
"""

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from univ_core.data.paired import PairedRgbtDataset, PairPaths, find_pairs, split_holdout
from univ_core.data.transforms import PairedRandomResizedCrop
from univ_core.models.backbone import PatchEncoder, create_backbone
from univ_core.models.model_file import DEFAULT_INPUT_SIZE


@dataclass
class AlignmentMetrics:
    """Averages over all patches of all pairs (retrieval rates in [0, 1])."""

    teacher_top1: float  # model IR -> teacher RGB, same cell
    teacher_within_one: float  # ... same cell or a neighbour
    teacher_within_one_control: float  # ... against an unrelated scene's RGB
    teacher_scene_dependent: float  # within_one - control
    own_top1: float  # model IR -> model RGB, same cell
    own_within_one: float
    own_within_one_control: float
    own_scene_dependent: float
    teacher_cos_gap: float  # cos(IR i, teacher RGB i) - cos(IR i, teacher RGB j)
    own_cos_gap: float  # cos(IR i, model RGB i) - cos(IR i, model RGB j)
    rgb_raw_cosine: float  # cos(model RGB i, teacher RGB i)
    rgb_cka: float  # linear CKA(model RGB tokens, teacher RGB tokens)
    ir_rgb_cka: float  # linear CKA(model IR tokens, model RGB tokens)
    rgb_within_one: float  # model RGB -> teacher RGB retrieval, within-one
    pairs: int


def retrieval(query: torch.Tensor, keys: torch.Tensor, grid: tuple[int, int]
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch hits of nearest-key retrieval: (same cell, within one cell), each (B, N) bool.

    Args:
        query: (B, N, D) unit tokens.
        keys: (B, N, D) unit tokens.
        grid: (rows, cols) of the N cells.
    """
    best = (query @ keys.transpose(1, 2)).argmax(-1)  # (B, N)
    cell = torch.arange(query.shape[1])
    cols = grid[1]
    dist = torch.maximum((best // cols - cell // cols).abs(), (best % cols - cell % cols).abs())
    return dist == 0, dist <= 1


def cos_gap(query: torch.Tensor, keys: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mean cos(query i, key i) - mean cos(query i, key j), j a random other cell: a scalar."""
    b, n, _ = query.shape
    other = (torch.arange(n) + torch.randint(1, n, (b, n), generator=generator)) % n
    aligned = (query * keys).sum(-1)  # (B, N)
    random = (query * keys.gather(1, other[..., None].expand(-1, -1, keys.shape[-1]))).sum(-1)
    return aligned.mean() - random.mean()


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two (M, D) token sets (Kornblith et al. 2019).

    1 = equal up to a rotation and an isotropic scale; invariant to a shared offset (columns
    are centred), unlike the raw cosine.
    """
    x, y = x.double() - x.double().mean(0), y.double() - y.double().mean(0)
    cross = (y.T @ x).norm() ** 2
    return float(cross / ((x.T @ x).norm() * (y.T @ y).norm()))


@torch.no_grad()
def token_sets(model: PatchEncoder, teacher: PatchEncoder, pairs: list[PairPaths],
               size: tuple[int, int], batch_size: int = 4) -> dict[str, torch.Tensor]:
    """Unit-norm tokens (P, N, D) of every pair: model IR, model RGB, teacher RGB."""
    crop = PairedRandomResizedCrop(size=size)  # eval: the whole image at size (H, W)
    dataset = PairedRgbtDataset(pairs, train=False, crop=crop)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    out: dict[str, list] = {'ir': [], 'rgb': [], 'teacher': []}
    model.eval()
    teacher.eval()
    for batch in tqdm(loader, desc='eval-alignment', unit='batch', leave=False):
        rgb_tokens, ir_tokens = model(torch.cat([batch['rgb'], batch['ir']])).chunk(2)
        out['ir'].append(ir_tokens)
        out['rgb'].append(rgb_tokens)
        out['teacher'].append(teacher(batch['rgb']) if teacher is not model else rgb_tokens)
    return {k: F.normalize(torch.cat(v).float(), dim=-1) for k, v in out.items()}


def alignment_metrics(tokens: dict[str, torch.Tensor], grid: tuple[int, int],
                      seed: int = 0) -> AlignmentMetrics:
    """Every metric of the module docstring from :func:`token_sets` output."""
    ir, rgb, tea = tokens['ir'], tokens['rgb'], tokens['teacher']
    p = len(ir)
    if p < 2:
        raise ValueError('eval-alignment needs >= 2 pairs (the control uses another scene)')
    unrelated = torch.roll(torch.arange(p), p // 2)  # pair i's control: pair i + P/2's RGB
    generator = torch.Generator().manual_seed(seed)
    m = {}
    for space, keys in (('teacher', tea), ('own', rgb)):
        top1, within = retrieval(ir, keys, grid)
        _, control = retrieval(ir, keys[unrelated], grid)
        m[f'{space}_top1'] = top1.float().mean().item()
        m[f'{space}_within_one'] = within.float().mean().item()
        m[f'{space}_within_one_control'] = control.float().mean().item()
        m[f'{space}_scene_dependent'] = m[f'{space}_within_one'] - control.float().mean().item()
        m[f'{space}_cos_gap'] = cos_gap(ir, keys, generator).item()
    flat = lambda t: t.reshape(-1, t.shape[-1])  # noqa: E731  (P*N, D)
    return AlignmentMetrics(
        **m, rgb_raw_cosine=(rgb * tea).sum(-1).mean().item(),
        rgb_cka=linear_cka(flat(rgb), flat(tea)), ir_rgb_cka=linear_cka(flat(ir), flat(rgb)),
        rgb_within_one=retrieval(rgb, tea, grid)[1].float().mean().item(), pairs=p)


def evaluate_alignment(model: PatchEncoder, teacher: PatchEncoder, pairs: list[PairPaths],
                       size: tuple[int, int] = DEFAULT_INPUT_SIZE, batch_size: int = 4,
                       seed: int = 0) -> AlignmentMetrics:
    """Alignment metrics of ``model`` against ``teacher`` on ``pairs`` (deterministic)."""
    if not pairs:
        raise ValueError('evaluate_alignment: no pairs given')
    tokens = token_sets(model, teacher, pairs, tuple(size), batch_size)
    return alignment_metrics(tokens, model.grid_size(*size), seed)


def load_heldout(path: Path) -> list[PairPaths]:
    """Held-out pairs recorded by ``univ pretrain`` (``pairs.json``)."""
    import json

    if not path.is_file():
        raise FileNotFoundError(f'pairs file not found: {path} (written by univ pretrain)')
    held = json.loads(path.read_text()).get('heldout', [])
    return [PairPaths(rgb=Path(r), ir=Path(i), name=Path(r).stem) for r, i in held]


def select_pairs(args: argparse.Namespace) -> list[PairPaths]:
    """--pairs FILE, or --data ROOT [--layout] [--split] [--holdout N [--seed S]]."""
    if args.pairs:
        flags = (('--data', args.data), ('--split', args.split), ('--holdout', args.holdout),
                 ('--layout', args.layout != 'auto'), ('--seed', args.seed is not None))
        given = [flag for flag, on in flags if on]
        if given:
            raise ValueError(f'eval-alignment: --pairs names its pairs itself; drop '
                             f'{", ".join(given)}')
        return load_heldout(args.pairs)
    if not args.data:
        raise ValueError('eval-alignment: give --pairs (a pretrain pairs.json) or --data ROOT')
    pairs = find_pairs(args.data, args.layout, args.split)
    if not args.holdout:
        return pairs
    seed = args.seed
    if seed is None:  # the held-out draw of `univ pretrain` with its default seed
        from univ_core.train.pretrain import PretrainConfig

        seed = PretrainConfig.seed
    return split_holdout(pairs, args.holdout, seed=seed)[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI flags of ``univ eval-alignment``."""
    parser.add_argument('--pairs', type=Path, help="held-out pairs: a pretrain run's pairs.json")
    parser.add_argument('--data', type=Path, help='or a dataset folder (native layout)')
    parser.add_argument('--layout', default='auto')
    parser.add_argument('--split', default=None)
    parser.add_argument('--holdout', type=int, default=0, help='only the N pairs held out by '
                        'name hash (as pretrain holdout / finetune data.holdout)')
    parser.add_argument('--seed', type=int, default=None,
                        help="holdout seed (default: univ pretrain's default seed, 7; finetune's "
                        'data.holdout draws with data.seed, 0 by default)')
    parser.add_argument('--checkpoint', default='univ',
                        help="model under test: 'univ' (teacher + shipped adapter), a merged "
                        "backbone file, or 'none' (teacher only)")
    parser.add_argument('--arch', default='vit_small_patch14_dinov2')
    parser.add_argument('--teacher-weights', default='default')
    parser.add_argument('--size', type=int, nargs=2, default=list(DEFAULT_INPUT_SIZE),
                        metavar=('H', 'W'), help='input size (default: the node model input)')
    parser.add_argument('--out', type=Path, help='write the metrics as JSON here')


def main(args: argparse.Namespace) -> int:
    """Print teacher (baseline) and the model's metrics side by side."""
    pairs = select_pairs(args)
    size = tuple(args.size)
    teacher = PatchEncoder(create_backbone(args.arch, args.teacher_weights))
    results = {'teacher': evaluate_alignment(teacher, teacher, pairs, size)}
    if args.checkpoint != 'none':
        model = PatchEncoder(create_backbone(args.arch, args.checkpoint))
        results['univ'] = evaluate_alignment(model, teacher, pairs, size)
    print(f'{len(pairs)} pairs at {size[0]} x {size[1]}')
    print(f'{"metric":<28}' + ''.join(f'{name:>10}' for name in results))
    for key in asdict(results['teacher']):
        print(f'{key:<28}' + ''.join(f'{getattr(r, key):>10.4f}' for r in results.values()))
    if args.out:
        from univ_core.train.checkpoint import write_json

        write_json(args.out, {'size': size, 'pairs': [p.name for p in pairs],
                              **{k: asdict(v) for k, v in results.items()}})
    return 0
