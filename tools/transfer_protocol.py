"""Downstream protocol: detection heads trained on one modality's labels, scored on both.

For each backbone (the frozen teacher, and UNIV = the teacher + the shipped LoRA adapter, or a
merged backbone file) x head-training modality x seed: ``univ finetune det`` head-only on
msrs_mini minus its 8 evaluation pairs (univ_core/data/evaluation_pairs.py), then the IR and RGB
images of those 8 held-out pairs are scored against their real boxes (COCO protocol: boxes down
to ``eval_score_threshold``, fp32), and so are LLVIP's 9 labelled evaluation pairs (LLVIP's own
person boxes, one list for both cameras; a dataset the head never saw). Reports mAP50 overall
and AP50 of person and car apart, the RGB->IR transfer of RGB-trained heads, and RGB
preservation as "RGB kept: x % of teacher" (per seed: UNIV's RGB mAP50 / the teacher's with the
same seed; mean and sd over seeds).

    .venv/bin/python tools/transfer_protocol.py --epochs 60 --out runs/transfer
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from univ_core.data.evaluation_pairs import LLVIP_TEST, MSRS_TEST
from univ_core.data.home import data_home
from univ_core.eval.benchmark import detection_sets
from univ_core.eval.downstream import evaluate
from univ_core.inference import PredictorConfig, load_predictor
from univ_core.train.checkpoint import write_json
from univ_core.train.downstream_data import Split
from univ_core.train.finetune import FinetuneConfig, finetune


def mean_sd(values: list[float]) -> str:
    """"mean ± sd" of a list (sd 0 for one value)."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f'{statistics.mean(values):.3f} ± {sd:.3f}'


def run_one(backbone: str, trained_on: str, seed: int, epochs: int, out: Path,
            held: dict) -> dict:
    """Train one head and score it on the held-out pairs' IR and RGB images.

    ``held``: :func:`~univ_core.eval.benchmark.detection_sets` (msrs and llvip pairs).
    """
    train = Split(str(data_home() / 'msrs_mini'), 'msrs_det', 'train',
                  exclude_evaluation_pairs=True)
    start = time.perf_counter()
    model = finetune(FinetuneConfig(task='det', modality=trained_on, data=train,
                                    backbone=backbone, epochs=epochs, seed=seed,
                                    out_dir=str(out)), resume=True, quiet=True)
    predictor = load_predictor(PredictorConfig(model=str(model), precision='fp32'))
    metrics, _ = evaluate('det', predictor, held['msrs'], ['ir', 'rgb'])
    llvip, _ = evaluate('det', predictor, held['llvip'], ['ir', 'rgb'])
    row = {'trained_on': trained_on, 'seed': seed,
           'minutes': round((time.perf_counter() - start) / 60, 2)}
    for modality in ('ir', 'rgb'):
        row[f'{modality}_map50'] = metrics[modality]['map50']
        for name in ('person', 'car'):
            row[f'{modality}_{name}_ap50'] = metrics[modality]['ap50'][name]
        row[f'llvip_{modality}_person_ap50'] = llvip[modality]['ap50']['person']
    return row


def table(rows: list[dict], backbones: list[str]) -> list[str]:
    """The Markdown table and the preservation / transfer lines."""
    lines = ['| backbone | head trained on | IR mAP50 | IR person / car AP50 | RGB mAP50 '
             '| LLVIP IR / RGB person AP50 |', '|---|---|---|---|---|---|']
    for name in backbones:
        for trained_on in ('rgb', 'ir'):
            sel = [r for r in rows if r['backbone'] == name and r['trained_on'] == trained_on]
            if sel:
                lines.append(
                    f"| {name} | {trained_on} | {mean_sd([r['ir_map50'] for r in sel])} | "
                    f"{mean_sd([r['ir_person_ap50'] for r in sel])} / "
                    f"{mean_sd([r['ir_car_ap50'] for r in sel])} | "
                    f"{mean_sd([r['rgb_map50'] for r in sel])} | "
                    f"{mean_sd([r['llvip_ir_person_ap50'] for r in sel])} / "
                    f"{mean_sd([r['llvip_rgb_person_ap50'] for r in sel])} |")
    by = {(r['backbone'], r['trained_on'], r['seed']): r for r in rows}
    pairs = [(by[('teacher', 'rgb', s)], by[('univ', 'rgb', s)]) for (b, t, s) in by
             if b == 'teacher' and t == 'rgb' and ('univ', 'rgb', s) in by]
    if pairs:
        kept = [100 * u['rgb_map50'] / t['rgb_map50'] for t, u in pairs if t['rgb_map50'] > 0]
        lines += ['', f'RGB kept: {mean_sd(kept) if kept else "n/a"} % of teacher (RGB-trained '
                      f'heads, {len(kept)} seeds; a seed whose teacher scores 0 has no ratio)']
        for key, what in (('ir_map50', 'msrs_mini IR mAP50'),
                          ('llvip_ir_person_ap50', 'LLVIP IR person AP50')):
            ratio = statistics.mean(u[key] for _, u in pairs) / max(
                statistics.mean(t[key] for t, _ in pairs), 1e-9)
            lines.append(f'RGB->IR transfer, UNIV / teacher {what}: {ratio:.2f} x (ratio of '
                         f'the means over {len(pairs)} seeds)')
    return lines


def main() -> int:
    """Run every (backbone, head modality, seed), resumably, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--univ', default='univ',
                        help="UNIV backbone: 'univ' (teacher + shipped adapter) or a merged file")
    parser.add_argument('--trained-on', nargs='+', default=['rgb', 'ir'], choices=['rgb', 'ir'])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--epochs', type=int, default=60)
    parser.add_argument('--out', type=Path, default=Path('runs/transfer'))
    args = parser.parse_args()
    backbones = {'teacher': 'default', 'univ': args.univ}
    held = detection_sets(data_home())  # opened once for every run
    rows = []
    for name, backbone in backbones.items():
        for trained_on in args.trained_on:
            for seed in args.seeds:
                row = {'backbone': name, **run_one(backbone, trained_on, seed, args.epochs,
                                                   args.out / f'{name}_{trained_on}_s{seed}',
                                                   held)}
                rows.append(row)
                print(json.dumps(row), flush=True)
                write_json(args.out / 'summary.json', {  # after every run: a kill keeps the rest
                    'held_out_pairs': list(MSRS_TEST) + list(LLVIP_TEST), 'epochs': args.epochs,
                    'backbones': backbones, 'precision': 'fp32',
                    'map_from_score': PredictorConfig.eval_score_threshold, 'runs': rows})
    text = '\n'.join(table(rows, list(backbones)))
    (args.out / 'table.md').write_text(text + '\n')
    print(text)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
