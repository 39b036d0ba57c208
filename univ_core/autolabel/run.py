"""`univ autolabel`: label aligned RGB-T pairs (native layouts) or rosbag2 bags with teachers.

    univ autolabel ../shared/data/roadscene ../shared/data/llvip drive.mcap --out labels/

Each input gets a folder ``OUT/<input name>/`` holding ``labels/visible/<pair>.txt`` and
``labels/infrared/<pair>.txt`` (YOLO: ``class cx cy w h``, normalised), ``masks/<pair>.png``
(package class ids, 255 = no label), ``pairs.json`` (where each pair's images are; a bag's
pairs are written to ``images/{vi,ir}/``), ``provenance.json`` (teachers and their sha256,
thresholds, class table, counts, and — where the input has real labels — the teacher labels'
AP50 against them), ``summary.png`` (label counts) and ``overlays/``. Real labels (MSRS
detection txt, LLVIP xml) replace the teacher's boxes of their pair, for the classes the
dataset labels (LLVIP: persons; the teacher's cars stay). ``univ finetune
data.format=autolabel data.root=OUT`` trains on the result.

Several inputs, a folder of inputs, a quoted glob or any fleet option (``--workers``,
``--address``) run a fleet job (:mod:`univ_core.autolabel.fleet`): every input labelled as
above into the same ``OUT/<input name>/``, on Ray workers, resumable, with one
``OUT/summary.json`` / ``summary.md`` over all inputs.
"""

import argparse
import re
import sys
import time
from pathlib import Path

from tqdm import tqdm

from univ_core.autolabel.config import AutolabelConfig, ClassTable
from univ_core.autolabel.labeller import Labeller
from univ_core.autolabel.output import LabelWriter, input_tag
from univ_core.autolabel.sources import is_input, open_input
from univ_core.autolabel.teachers import load_teacher
from univ_core.fleet.cli import EXIT_CODES_HELP, add_fleet_arguments, fleet_config, is_fleet
from univ_core.train.config import load_config

OVERRIDE = re.compile(r'[A-Za-z_][\w.]*=.*')  # a config key=value word; an input is a path


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
                    progress: bool = True, topics: tuple[str, str] | None = None) -> dict:
    """Label every pair of one input (a dataset folder or a bag) into ``out``.

    ``topics``: a bag's (RGB, thermal) camera topics, raw or compressed (None: the defaults of
    :mod:`univ_ros.replay.topics`).

    Returns:
        The input's provenance summary (also written to ``out/provenance.json``); for a
        damaged bag its ``damage`` says what stopped the reading, and the pairs read before it
        are labelled.
    """
    writer = LabelWriter(out, labeller, force=force)
    start = time.perf_counter()
    try:
        # A bag's pairs are decoded into the staging folder, so they move into ``out`` with it.
        pairs, damage = open_input(source, layout, split, writer.staging,
                                   progress=progress, topics=topics)
        for item in tqdm(pairs, desc=f'autolabel {input_tag(source)}', unit='pair',
                         disable=not progress):
            writer.add(item)
    except BaseException:
        writer.discard()
        raise
    return writer.finish(source, time.perf_counter() - start, damage)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI flags of ``univ autolabel``."""
    parser.epilog = EXIT_CODES_HELP + ' One input alone: 1 also when it is damaged.'
    parser.add_argument('inputs', nargs='+',
                        help='dataset folders (native layouts) or bags; several, folders of '
                             "them or quoted globs ('runs/*/') run a fleet job")
    parser.add_argument('--out', type=Path, required=True, help='output folder')
    parser.add_argument('--layout', default='auto', help='layout of the folders (paired.py)')
    parser.add_argument('--split', default=None, help="e.g. 'train' where the layout has splits")
    parser.add_argument('--config', type=Path, help='YAML (AutolabelConfig fields)')
    parser.add_argument('--force', action='store_true',
                        help='replace existing outputs (fleet: redo every input)')
    parser.add_argument('--quiet', action='store_true', help='no progress bars')
    parser.add_argument('--rgb-topic', default=None,
                        help='bags: the RGB camera topic, sensor_msgs/Image or CompressedImage '
                             '(default /camera/rgb/image_raw)')
    parser.add_argument('--thermal-topic', default=None,
                        help='bags: the thermal camera topic (default /camera/thermal/image_raw)')
    parser.add_argument('overrides', nargs='*', help='key=value, e.g. box_threshold=0.4')
    add_fleet_arguments(parser)


def split_overrides(args: argparse.Namespace) -> None:
    """Move the ``key=value`` words argparse put in ``inputs`` to ``overrides``.

    Both are positional, so argparse gives every word to ``inputs``; a key=value word would be
    taken for an input (and turn one input into a fleet run).

    Raises:
        ValueError: no input is left.
    """
    words = [*args.inputs, *args.overrides]
    args.inputs = [w for w in words if not OVERRIDE.fullmatch(w)]
    args.overrides = [w for w in words if OVERRIDE.fullmatch(w)]
    if not args.inputs:
        raise ValueError('no input given (dataset folders or bags)')


def bag_topics(args: argparse.Namespace) -> tuple[str, str] | None:
    """(RGB, thermal) camera topics of bag inputs, or None for the defaults."""
    if args.rgb_topic is None and args.thermal_topic is None:
        return None
    from univ_ros.replay import topics as T  # bags need univ_ros anyway

    return args.rgb_topic or T.RGB_IMAGE, args.thermal_topic or T.THERMAL_IMAGE


def run_fleet_autolabel(args: argparse.Namespace, config: AutolabelConfig) -> int:
    """Every input labelled on Ray workers (or here), one summary; returns the exit code."""
    from univ_core.autolabel.fleet import SUMMARY, AutolabelJob
    from univ_core.fleet.report import first_line
    from univ_core.fleet.runner import run_fleet

    fleet = fleet_config(args, args.out, args.force, not args.quiet)
    outcome = run_fleet(AutolabelJob(config, args.layout, args.split, bag_topics(args)),
                        args.inputs, fleet)
    report = outcome.report
    inputs, totals = report['inputs'], report['totals']
    for error in report['errors']:
        print(f"univ autolabel: {error['status']}: {first_line(error['error'])}",
              file=sys.stderr)
    boxes = {m: sum(n.values()) for m, n in totals['boxes'].items()}
    print(f"fleet autolabel of {inputs['total']} inputs: {outcome.status} ({inputs['ok']} ok, "
          f"{inputs['partial']} damaged (labelled up to the damage), {inputs['error']} failed; "
          f"{inputs['ran']} run now, {inputs['reused']} done before): "
          f"{totals['pairs']} pairs ({totals['night_pairs']} night), {boxes['rgb']} RGB / "
          f"{boxes['thermal']} thermal boxes\n  summary: {args.out / (SUMMARY + '.md')}\n"
          f"  per input: {args.out}/<input>/")
    return outcome.exit_code


def main(args: argparse.Namespace) -> int:
    """Entry point of ``univ autolabel``."""
    split_overrides(args)
    config = load_config(AutolabelConfig, args.config, args.overrides)
    if is_fleet(args, is_input):
        return run_fleet_autolabel(args, config)
    (source,) = args.inputs
    out = args.out / input_tag(source)
    summary = autolabel_input(source, out, load_labeller(config), args.layout, args.split,
                              args.force, not args.quiet, bag_topics(args))
    counts = summary['counts']
    if summary['damage']:
        print(f"univ autolabel: error: {summary['damage']}; the labels of the "
              f"{summary['pairs']} pairs read before the damage are in {out}", file=sys.stderr)
        return 1
    print(f"autolabel: {source}: {summary['pairs']} pairs ({summary['night_pairs']} night), "
          f"{sum(counts['rgb'].values())} RGB / {sum(counts['thermal'].values())} thermal "
          f"boxes -> {out}")
    return 0
