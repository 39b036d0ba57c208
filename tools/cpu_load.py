"""Keep every CPU core busy while a command runs: check that tests hold up on a loaded machine.

usage: python tools/cpu_load.py [--workers N] -- COMMAND [ARG ...]

One busy-looping process per core (``os.cpu_count()``, or ``--workers``) runs at normal
priority for as long as COMMAND runs; the load stops when COMMAND exits (or on Ctrl-C) and
COMMAND's exit status is returned. Example, the whole suite with both cores of a 2-core
machine taken::

    python tools/cpu_load.py -- .venv/bin/python -m pytest -q
"""

import argparse
import multiprocessing
import os
import signal
import subprocess
import sys
import time


def spin() -> None:
    """Busy-loop until terminated (one core's worth of load)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the command; we end it
    while True:
        pass


def main(argv: list[str] | None = None) -> int:
    """Start the load, run the command, stop the load; returns the command's exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if '--' not in argv or argv.index('--') == len(argv) - 1:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    split = argv.index('--')
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--workers', type=int, default=os.cpu_count() or 1,
                        help='busy processes (default: one per core)')
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    workers = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.workers)]
    for worker in workers:
        worker.start()
    print(f'cpu_load: {args.workers} busy processes while running: {" ".join(command)}',
          file=sys.stderr, flush=True)
    start = time.monotonic()
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 130
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.join()
        print(f'cpu_load: load stopped after {time.monotonic() - start:.0f} s', file=sys.stderr)


if __name__ == '__main__':
    sys.exit(main())
