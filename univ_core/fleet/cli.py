"""The command-line flags every fleet command shares (``univ replay``, ``univ autolabel``)."""

import argparse
from collections.abc import Callable
from pathlib import Path

from univ_core.fleet.inputs import GLOB_CHARS

EXIT_CODES_HELP = ('exit codes: 0 every input done; 3 partial (some inputs failed or were '
                   'damaged: their error rows are in the report, the others are complete); 1 '
                   'error (bad input, or no input could be processed); 2 usage.')


def add_fleet_arguments(parser: argparse.ArgumentParser, unit: str = 'input') -> None:
    """``--workers``, ``--address``, ``--cpus-per-worker``, ``--gpus-per-worker``, ``--retries``.

    Args:
        parser: the command's parser.
        unit: what one unit of work is ('bag'), for the help texts.
    """
    fleet = parser.add_argument_group(f'fleet (many {unit}s, on Ray)')
    fleet.add_argument('--workers', type=int, default=None,
                       help='Ray workers, each with its own model (default: as many as the '
                            'CPUs/GPUs hold); 1 = in this process, without Ray')
    fleet.add_argument('--address', default=None,
                       help="join a Ray cluster: 'auto' (this node's) or ray://HOST:PORT; "
                            'default: a local Ray runtime on this machine')
    fleet.add_argument('--cpus-per-worker', type=float, default=None,
                       help='Ray CPUs per worker (its torch threads) (1)')
    fleet.add_argument('--gpus-per-worker', type=float, default=None,
                       help='Ray GPUs per worker: 1 = one worker per GPU, 0.5 = two share one (0)')
    fleet.add_argument('--retries', type=int, default=None,
                       help=f're-runs of a {unit} whose worker died, from scratch, per {unit} '
                            f'(the worker is restarted) (2)')


SIZE_FLAGS = ('cpus_per_worker', 'gpus_per_worker', 'retries')  # RayConfig fields
FLEET_FLAGS = ('workers', 'address', *SIZE_FLAGS)


def uses_fleet_options(args: argparse.Namespace) -> bool:
    """True when a fleet-only flag was given (a single input then runs as a fleet too)."""
    return any(getattr(args, name) is not None for name in FLEET_FLAGS)


def is_fleet(args: argparse.Namespace, is_input: Callable[[Path], bool]) -> bool:
    """Whether ``args.inputs`` make a fleet run (else one input runs exactly as it always did).

    Fleet: several inputs, a folder that is not one input itself (a folder of inputs), a glob,
    or a fleet option.
    """
    if len(args.inputs) > 1 or uses_fleet_options(args):
        return True
    path = Path(args.inputs[0])
    if not path.exists():
        return bool(GLOB_CHARS.search(args.inputs[0]))
    return path.is_dir() and not is_input(path)


def fleet_config(args: argparse.Namespace, out: Path, force: bool, progress: bool,
                 device: str = '') -> object:
    """The FleetConfig of the parsed flags (``--workers 1`` without ``--address``: in-process).

    Raises:
        ValueError: ``device`` is a GPU but the Ray workers ask for none.
    """
    from univ_core.fleet.execute import RayConfig
    from univ_core.fleet.runner import FleetConfig

    # flags not given: RayConfig's defaults (given ones also make one input a fleet run)
    sizes = {name: getattr(args, name) for name in SIZE_FLAGS}
    ray = RayConfig(args.address, args.workers,
                    **{name: value for name, value in sizes.items() if value is not None})
    in_process = args.workers == 1 and args.address is None
    if str(device).startswith('cuda') and not in_process and not ray.gpus_per_worker:
        raise ValueError(f'--device {device} on Ray workers needs --gpus-per-worker (1: a GPU '
                         'each, 0.5: two workers per GPU): Ray gives GPUs only to workers that '
                         'ask for them')
    return FleetConfig(Path(out), ray, not in_process, force, progress)
