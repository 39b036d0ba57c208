"""`univ demo`: aligned RGB-T pairs -> a rosbag2 bag -> offline replay with the default model.

Data: ``--data DIR``, else ``$UNIV_DATA``, else ``../shared/data`` beside the repository (a
folder of datasets: ``msrs_mini`` with boxes is preferred); by default only its evaluation pairs
(univ_core/data/evaluation_pairs.py), which the default model never saw, so the printed mAP is
a held-out number. The model is the shipped default model (univ_core/weights/
default_model.safetensors: the UNIV backbone with detection + segmentation heads; ``univ
train-default`` reproduces it). Nothing is written into the data; nothing is trained.
"""

import argparse
import sys
from pathlib import Path

from univ_core.data.home import data_home
from univ_core.models.model_file import default_model_path
from univ_ros.messages import silent_outputs
from univ_ros.replay import topics as T
from univ_ros.replay.bag_from_pairs import BagConfig, write_bag
from univ_ros.replay.bagio import output_dir
from univ_ros.replay.offline import ReplayConfig, replay_offline
from univ_ros.replay.samples import open_samples, resolve_format

PREFERRED = ('msrs_mini', 'msrs', 'llvip', 'm3fd', 'roadscene')  # sub-folders tried in order
NO_DATA = (
    'no RGB-thermal pairs found (looked in: {where}). Get an aligned dataset, e.g. LLVIP '
    '(https://bupt-ai-cz.github.io/LLVIP/: visible/train + infrared/train, Annotations/ for '
    'boxes) or MSRS (https://github.com/Linfeng-Tang/MSRS: train/vi + train/ir; boxes: '
    'https://github.com/Lele-3/MSRS-detection-label as detection/{{visible,infrared}}/train), '
    'then run `univ demo --data /path/to/it` or set UNIV_DATA=/path/to/it')


def _dataset_format(root: Path) -> str | None:
    """The bag-from-pairs format of ``root``, or None when it is not a dataset."""
    if not root.is_dir():
        return None
    try:
        return resolve_format(root, 'auto')
    except ValueError:
        return None


def find_demo_data(explicit: Path | None) -> tuple[Path, str]:
    """(dataset root, format) for the demo.

    Raises:
        FileNotFoundError: no dataset; the message says how to get LLVIP or MSRS.
    """
    bases = [Path(explicit)] if explicit is not None else [data_home()]
    looked = []
    for base in bases:
        for root in (base, *(base / name for name in PREFERRED)):
            looked.append(str(root))
            fmt = _dataset_format(root)
            if fmt is not None:
                return root, fmt
    raise FileNotFoundError(NO_DATA.format(where=', '.join(looked[:3]) + ', ...'))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`univ demo` arguments."""
    parser.add_argument('--data', type=Path, default=None,
                        help='aligned RGB-T dataset (default: $UNIV_DATA, else '
                             '../shared/data, or its first sub-folder that is a dataset: '
                             'msrs_mini, msrs, llvip, m3fd, roadscene)')
    parser.add_argument('--out', type=Path, default=Path('univ_demo'),
                        help='output folder (default: ./univ_demo)')
    parser.add_argument('--model', type=Path, default=None,
                        help='model file to use instead of the default model')
    parser.add_argument('--split', default='train', help='dataset split (train)')
    parser.add_argument('--limit', type=int, default=None, help='first N pairs only')
    parser.add_argument('--all-pairs', action='store_true',
                        help='every pair of the split, not only the held-out evaluation pairs')
    parser.add_argument('--quiet', action='store_true', help='no progress bars')
    parser.add_argument('--force', action='store_true', help='replace an existing --out')


def main(args: argparse.Namespace) -> int:
    """Run `univ demo`."""
    from univ_core.inference import PredictorConfig, load_predictor

    root, fmt = find_demo_data(args.data)
    print(f'data: {root} ({fmt})', file=sys.stdout)
    model = args.model if args.model is not None else default_model_path()
    # fp32: the printed numbers are the README's on any CPU ('auto' may pick bf16 / int8 here)
    predictor = load_predictor(PredictorConfig(model=str(model), precision='fp32'))
    if (note := silent_outputs(predictor)) is not None:
        print(f'univ demo: {note}', file=sys.stderr)
    held_out = not args.all_pairs
    try:
        source = open_samples(root, fmt, args.split, args.limit, held_out=held_out)
    except FileNotFoundError:
        if not held_out:
            raise
        held_out = False  # a user's own data: no evaluation pairs in it
        source = open_samples(root, fmt, args.split, args.limit)
    progress = not args.quiet
    with output_dir(args.out, args.force) as staging:
        staging.mkdir()
        write_bag(source, staging / 'input_bag', BagConfig(), progress=progress)
        config = ReplayConfig(progress=progress)
        report = replay_offline(staging / 'input_bag', staging / 'replay', predictor, config,
                                model_name=str(model))
    out = args.out
    which = 'held-out evaluation pairs' if held_out else 'pairs (some may be trained on)'
    print(f"replayed {report['pairs']['processed']} {which} of {root}", file=sys.stdout)
    print(summary_lines(report), file=sys.stdout)
    print(f"  input bag:  {out / 'input_bag'}\n  output bag: {out / 'replay' / 'bag'}\n"
          f"  report:     {out / 'replay' / 'report.md'} (and report.json)\n"
          f"  overlays:   {out / 'replay' / 'overlays'}", file=sys.stdout)
    return 0


def summary_lines(report: dict) -> str:
    """Detection mAP50 per modality and segmentation outputs, as the demo prints them."""
    thresholds = report.get('thresholds') or {}
    lines = [f"  detection mAP50 (COCO protocol: boxes down to {thresholds.get('map_from')}; "
             f"the bag holds boxes >= {thresholds.get('deployment')}):"]
    detection = report['scores'].get('detection') or {}
    for mode in ('rgb', 'thermal', 'fused'):
        if (value := (detection.get(mode) or {}).get('map50')) is not None:
            lines.append(f'    {mode:<8} {value:.3f}')
    published, pairs = report['published'], max(report['pairs']['processed'], 1)
    lines.append(f"  published: {published['messages'][T.SEGMENTATION]} segmentation masks, "
                 f"{published['messages'][T.DETECTIONS]} detection arrays, "
                 f"{published['boxes'] / pairs:.1f} boxes per pair")
    return '\n'.join(lines)
