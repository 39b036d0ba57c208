"""`univ replay`: a bag through the perception pipeline -> output bag + report.

Offline (default): the bag is read with rosbags, paired with the node's synchroniser and run
through the node's Predictor as fast as the machine allows (deterministic). Online (``--rate``):
the bag's raw CDR is published through rclpy at the recorded rate x R into a running
``univ_perception`` node (started here unless ``--node running``) and its outputs are captured
with their latency. Output folder: ``bag/`` (inputs + outputs), ``report.json``, ``report.md``,
``latency.png``, ``per_class.png``, ``overlays/``.

Several bags (files, folders of bags, quoted globs) or any fleet option (``--workers``,
``--address``) run a fleet replay (:mod:`univ_ros.replay.fleet`): offline, on Ray workers,
resumable, one merged report.
"""

import argparse
import functools
import sys
from pathlib import Path

import yaml

from univ_core.fleet.cli import (
    EXIT_CODES_HELP,
    add_fleet_arguments,
    fleet_config,
    is_fleet,
)
from univ_core.fleet.inputs import is_bag
from univ_ros.replay import topics as T


def read_node_params(path: Path | None) -> dict:
    """The ``ros__parameters`` of a node parameter file (config/perception.yaml layout)."""
    if path is None:
        return {}
    if not Path(path).is_file():
        raise FileNotFoundError(f'--config {path} not found')
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
        (section,) = [v for v in data.values() if isinstance(v, dict) and 'ros__parameters' in v]
        return dict(section['ros__parameters'])
    except (yaml.YAMLError, ValueError, AttributeError) as err:
        raise ValueError(f'--config {path}: expected one node section with ros__parameters '
                         f'(as config/perception.yaml), got: {err}') from err


def settings(args: argparse.Namespace) -> dict:
    """Node parameters from --config, overridden by the command-line flags that were given."""
    params = read_node_params(args.config)
    for key in ('model', 'mode', 'device'):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    params.setdefault('mode', 'fused')
    if params['mode'] not in ('fused', 'rgb', 'thermal'):
        raise ValueError(f"mode {params['mode']!r}: replay runs fused, rgb or thermal")
    if args.slop is not None:
        params['sync_slop'] = args.slop
    return params


def predictor_from(params: dict) -> object:
    """The Predictor the node would build from ``params``."""
    import dataclasses

    from univ_core.inference import PredictorConfig, load_predictor
    from univ_ros.params import set_classes

    # Every PredictorConfig field the parameter file sets (backend, precision, ...), and the
    # class names and palette, as the node applies them.
    keys = {f.name for f in dataclasses.fields(PredictorConfig)}
    predictor = load_predictor(PredictorConfig(**{k: v for k, v in params.items() if k in keys}))
    set_classes(predictor, params)
    return predictor


def replay_config(args: argparse.Namespace, params: dict) -> object:
    """The offline ReplayConfig of the command line."""
    from univ_ros.replay.offline import ReplayConfig

    return ReplayConfig(args.rgb_topic, args.thermal_topic, params['mode'],
                        not args.output_mode_only, params.get('sync_slop'),  # 0 / None: auto
                        args.storage, args.overlays, not args.quiet)


def run_offline(args: argparse.Namespace, params: dict) -> dict:
    """Offline replay; returns the report."""
    from univ_ros.messages import silent_outputs
    from univ_ros.replay.offline import replay_offline

    predictor = predictor_from(params)
    if (note := silent_outputs(predictor)) is not None:
        print(f'univ replay: {note}', file=sys.stderr)
    return replay_offline(args.bag, args.out, predictor, replay_config(args, params),
                          args.force, str(params.get('model', '')))


def run_online(args: argparse.Namespace, params: dict) -> dict:
    """Online replay through the node; returns the report."""
    from univ_ros.replay.online import OnlineConfig, replay_online

    params = {**params, 'qos.reliability': args.qos or 'reliable'}
    config = OnlineConfig(args.rgb_topic, args.thermal_topic, args.rate, args.node or 'start',
                          args.config, params, args.storage, args.overlays, not args.quiet,
                          OnlineConfig.node_timeout if args.node_timeout is None
                          else args.node_timeout)
    return replay_online(args.bag, args.out, config, args.force)


def run_fleet_replay(args: argparse.Namespace, params: dict) -> int:
    """Offline replay of every input bag on Ray workers; returns the exit code."""
    from univ_core.fleet.runner import run_fleet
    from univ_ros.replay.fleet import ReplayJob

    config = fleet_config(args, args.out, args.force, not args.quiet, params.get('device', ''))
    check_model(params)
    job = ReplayJob(functools.partial(predictor_from, params), replay_config(args, params),
                    params, str(params.get('model', '')))
    outcome = run_fleet(job, args.inputs, config)
    report = outcome.report
    bags, pairs, lat = report['bags'], report['pairs'], report['latency_ms']
    mean_ap = (report['scores'].get('detection') or {}).get(report['mode'], {}).get('map')
    mean_ap = 'n/a' if mean_ap is None else f'{mean_ap:.3f}'
    p50 = 'n/a' if lat['p50'] is None else f"{lat['p50']:.1f} ms"
    for error in report['errors']:
        first = (error['error'] or '').strip().splitlines() or ['']
        print(f"univ replay: {error['status']}: {first[0]}", file=sys.stderr)
    print(f"fleet replay of {bags['total']} bags: {outcome.status} ({bags['ok']} ok, "
          f"{bags['partial']} partial, {bags['error']} failed; {bags['ran']} run now, "
          f"{bags['reused']} done before): {pairs['processed']} pairs, mAP ({report['mode']}) "
          f"{mean_ap}, latency p50 {p50}\n  report: {args.out / 'report.md'}\n  per bag: "
          f"{args.out / 'bags'}", file=sys.stdout)
    return outcome.exit_code


def check_model(params: dict) -> None:
    """Fail before any worker starts when the Predictor settings are invalid."""
    import dataclasses

    from univ_core.inference import PredictorConfig

    keys = {f.name for f in dataclasses.fields(PredictorConfig)}
    PredictorConfig(**{k: v for k, v in params.items() if k in keys})
    model = str(params.get('model') or '')
    if model and not Path(model).is_file():
        raise FileNotFoundError(f'model file {model} not found')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`univ replay` arguments."""
    parser.epilog = EXIT_CODES_HELP + ' One bag alone: 1 also when it is damaged.'
    parser.add_argument('inputs', nargs='+', metavar='BAG',
                        help='rosbag2 directory or .mcap / .db3 file; several, folders of bags '
                             "or quoted globs ('runs/*/') run a fleet replay")
    parser.add_argument('--out', required=True, type=Path, help='output folder to create')
    timing = parser.add_mutually_exclusive_group()
    timing.add_argument('--offline', action='store_true',
                        help='Predictor directly, as fast as possible (default)')
    timing.add_argument('--rate', type=float, default=None,
                        help='online: publish through rclpy at the recorded rate x RATE')
    parser.add_argument('--config', type=Path, default=None,
                        help='node parameter file (config/perception.yaml layout)')
    parser.add_argument('--model', default=None, help="model file ('' = the default model)")
    parser.add_argument('--mode', default=None, choices=('fused', 'rgb', 'thermal'),
                        help='mode of the output bag (default fused)')
    parser.add_argument('--device', default=None, help='auto | cpu | cuda | cuda:N')
    parser.add_argument('--rgb-topic', default=T.RGB_IMAGE)
    parser.add_argument('--thermal-topic', default=T.THERMAL_IMAGE)
    parser.add_argument('--slop', type=float, default=None,
                        help="sync window, seconds (default: --config's sync_slop; 0: auto, half "
                        "the faster camera's frame period, as the node)")
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap',
                        help='output bag storage (mcap)')
    parser.add_argument('--overlays', type=int, default=4, help='overlay PNGs to save (4)')
    parser.add_argument('--output-mode-only', action='store_true',
                        help='offline: score only --mode (default: rgb, thermal and fused)')
    parser.add_argument('--node', choices=('start', 'running'), default=None,
                        help='online: start univ_perception here (default), or use a running '
                        'one (--config/--model/--slop then describe it, for scoring)')
    parser.add_argument('--qos', choices=('reliable', 'best_effort'), default=None,
                        help="online: reliability of the started node's camera subscriptions "
                             "(reliable: drops are the node's own, not lost DDS fragments)")
    parser.add_argument('--node-timeout', type=float, default=None,
                        help='online: seconds to wait for the node to come up (120)')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    parser.add_argument('--force', action='store_true',
                        help='replace an existing --out (fleet: redo every bag)')
    add_fleet_arguments(parser, 'bag')

def check_flags(args: argparse.Namespace) -> None:
    """Refuse flags the chosen replay would ignore (each named), rather than drop them."""
    if args.rate is not None and not args.rate > 0:
        raise ValueError(f'--rate must be > 0, got {args.rate}')
    online = {'--node': args.node, '--qos': args.qos, '--node-timeout': args.node_timeout}
    if args.rate is None and (given := [f for f, value in online.items() if value is not None]):
        raise ValueError(f'{", ".join(given)}: online replay only (give --rate)')
    if args.rate is not None and args.output_mode_only:
        raise ValueError('--output-mode-only: offline replay only (online scores what the node '
                         'publishes)')
    # a running node keeps its own device and QoS (--model, --slop, --config still tell the
    # report its classes and sync window)
    given = [flag for flag, value in (('--device', args.device), ('--qos', args.qos)) if value]
    if args.node == 'running' and given:
        raise ValueError(f'{", ".join(given)}: --node running uses the running node\'s own; set '
                         'them there (its parameters) or let replay start one')


def main(args: argparse.Namespace) -> int:
    """Run `univ replay`."""
    check_flags(args)
    params = settings(args)
    if is_fleet(args, is_bag):
        if args.rate is not None:
            raise ValueError('online replay (--rate) takes one bag; fleet replays are offline')
        return run_fleet_replay(args, params)
    args.bag = Path(args.inputs[0])
    report = run_online(args, params) if args.rate is not None else run_offline(args, params)
    lat, pairs = report['latency_ms'], report['pairs']
    p50 = 'n/a' if lat['p50'] is None else f"{lat['p50']:.1f} ms"
    print(f"{report['kind']} replay of {args.bag}: {pairs['processed']}/{pairs['synchronised']}"
          f" pairs, latency p50 {p50}\n  report: {args.out / 'report.md'}\n"
          f"  output bag: {args.out / 'bag'}\n  overlays: {args.out / 'overlays'}",
          file=sys.stdout)
    return 0
