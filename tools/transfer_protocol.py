"""Downstream protocol of the README: IR detection mAP50 of heads trained on RGB or IR labels.

For each backbone (the frozen teacher and a UNIV export) x head-training modality (rgb, ir) x
seed: `univ finetune det` head-only on msrs_mini minus held-out pairs, then `univ eval det` of
that model on the held-out pairs' IR (and RGB) images. Writes a JSON summary and prints a table.

    .venv/bin/python tools/transfer_protocol.py --univ runs/pretrain_cpu/univ_backbone.safetensors
        --epochs 60 --out runs/transfer60
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from univ_core.data.home import data_home
from univ_core.eval.downstream import evaluate
from univ_core.inference import PredictorConfig, load_predictor
from univ_core.train.checkpoint import write_json
from univ_core.train.downstream_data import Split, open_split
from univ_core.train.finetune import FinetuneConfig, finetune


def main() -> int:
    """Run every (backbone, head modality, seed) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--univ', required=True, help='UNIV merged backbone (safetensors)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--holdout', type=int, default=8)
    parser.add_argument('--epochs', type=int, default=60)
    parser.add_argument('--out', type=Path, default=Path('runs/transfer'))
    args = parser.parse_args()
    split = Split(str(data_home() / 'msrs_mini'), 'msrs_det', 'train', args.holdout, seed=0)
    _, held = open_split(split)
    rows = []
    for backbone_name, backbone in (('teacher', 'default'), ('univ', args.univ)):
        for trained_on in ('rgb', 'ir'):
            for seed in args.seeds:
                out = args.out / f'{backbone_name}_{trained_on}_s{seed}'
                start = time.perf_counter()
                model = finetune(FinetuneConfig(task='det', modality=trained_on, data=split,
                                                backbone=backbone, epochs=args.epochs, seed=seed,
                                                out_dir=str(out)), quiet=True)
                predictor = load_predictor(PredictorConfig(model=str(model)))
                metrics, _ = evaluate('det', predictor, held, ['ir', 'rgb'])
                rows.append({'backbone': backbone_name, 'trained_on': trained_on, 'seed': seed,
                             'ir_map50': metrics['ir']['map50'], 'ir_map': metrics['ir']['map'],
                             'rgb_map50': metrics['rgb']['map50'],
                             'minutes': round((time.perf_counter() - start) / 60, 2)})
                print(json.dumps(rows[-1]), flush=True)
                write_json(args.out / 'summary.json', {  # after every run: a kill keeps the rest
                    'held_out_pairs': len(held), 'epochs': args.epochs,
                    'map_from_score': PredictorConfig.eval_score_threshold, 'runs': rows})
    print('| backbone | head trained on | IR mAP50 (mean ± sd over seeds) | RGB mAP50 |')
    print('|---|---|---|---|')
    for backbone_name in ('teacher', 'univ'):
        for trained_on in ('rgb', 'ir'):
            sel = [r for r in rows
                   if r['backbone'] == backbone_name and r['trained_on'] == trained_on]
            ir = [r['ir_map50'] for r in sel]
            rgb = [r['rgb_map50'] for r in sel]
            sd = statistics.stdev(ir) if len(ir) > 1 else 0.0
            print(f'| {backbone_name} | {trained_on} | {statistics.mean(ir):.3f} ± {sd:.3f} | '
                  f'{statistics.mean(rgb):.3f} |')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
