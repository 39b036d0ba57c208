"""`univ autolabel`: label aligned RGB-T pairs (native layouts) or rosbag2 bags with teachers.

    univ autolabel ../shared/data/roadscene ../shared/data/llvip drive.mcap --out labels/

Each input gets a folder ``OUT/<input name>/`` holding ``labels/visible/<pair>.txt`` and
``labels/infrared/<pair>.txt`` (YOLO: ``class cx cy w h``, normalised), ``masks/<pair>.png``
(package class ids, 255 = no label), ``pairs.json`` (where each pair's images are; a bag's
pairs are written to ``images/{vi,ir}/``), ``provenance.json`` (teachers and their sha256,
thresholds, class table, counts, and — where the input has real labels — the teacher labels'
AP50 against them), ``summary.png`` (label counts) and ``overlays/``. Real labels (MSRS
detection txt, LLVIP xml) replace the teacher's boxes of their pair. ``univ finetune
data.format=autolabel data.root=OUT`` trains on the result.
"""

import argparse
import time
from pathlib import Path

from tqdm import tqdm

from univ_core.autolabel.config import AutolabelConfig, ClassTable
from univ_core.autolabel.labeller import Labeller
from univ_core.autolabel.output import LabelWriter, input_tag
from univ_core.autolabel.sources import open_input
from univ_core.autolabel.teachers import load_teacher
from univ_core.train.config import load_config


def load_labeller(config: AutolabelConfig) -> Labeller:
    """The configured teachers, loaded once (a fleet worker keeps one per process)."""
    table = ClassTable.load(config.classes)
    det_path, seg_path = config.detector_path(), config.segmenter_path()
    detector = (load_teacher(config.detector_adapter, det_path, threads=config.threads)
                if det_path else None)
    segmenter = (load_teacher(config.segmenter_adapter, seg_path, threads=config.threads)
                 if seg_path else None)
    return Labeller(config, table, detector, segmenter)


def autolabel_input(source: str, out: Path, labeller: Labeller, layout: str = 'auto',
                    split: str | None = None, force: bool = False,
                    progress: bool = True) -> dict:
    """Label every pair of one input (a dataset folder or a bag) into ``out``.

    Returns:
        The input's provenance summary (also written to ``out/provenance.json``).
    """
    pairs = open_input(source, layout, split, out)
    writer = LabelWriter(out, labeller, force=force)
    start = time.perf_counter()
    for item in tqdm(pairs, desc=f'autolabel {input_tag(source)}', unit='pair',
                     disable=not progress):
        writer.add(item)
    return writer.finish(source, time.perf_counter() - start)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI flags of ``univ autolabel``."""
    parser.add_argument('inputs', nargs='+', help='dataset folders (native layouts) or bags')
    parser.add_argument('--out', type=Path, required=True, help='output folder')
    parser.add_argument('--layout', default='auto', help='layout of the folders (paired.py)')
    parser.add_argument('--split', default=None, help="e.g. 'train' where the layout has splits")
    parser.add_argument('--config', type=Path, help='YAML (AutolabelConfig fields)')
    parser.add_argument('--force', action='store_true', help='replace existing outputs')
    parser.add_argument('--quiet', action='store_true', help='no progress bars')
    parser.add_argument('overrides', nargs='*', help='key=value, e.g. box_threshold=0.4')


def main(args: argparse.Namespace) -> int:
    """Entry point of ``univ autolabel``."""
    config = load_config(AutolabelConfig, args.config, args.overrides)
    labeller = load_labeller(config)
    for source in args.inputs:
        out = args.out / input_tag(source)
        summary = autolabel_input(source, out, labeller, args.layout, args.split, args.force,
                                  not args.quiet)
        counts = summary['counts']
        print(f"autolabel: {source}: {summary['pairs']} pairs ({summary['night_pairs']} night), "
              f"{sum(counts['rgb'].values())} RGB / {sum(counts['thermal'].values())} thermal "
              f"boxes -> {out}")
    return 0
