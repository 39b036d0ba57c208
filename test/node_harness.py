"""Runs the perception node in its own process for the tests, optionally with a faulty Predictor.

usage: python test/node_harness.py [--managed] [--predict-seconds S] [--fail-every N]
                                   --ros-args -p model:=... [...]

``--managed`` runs the lifecycle node (``perception_lifecycle_node``) instead of the plain one.
``--predict-seconds S`` makes every Predictor.predict call last at least S seconds (the load
test: a Predictor slower than the camera frame period); ``--fail-every N`` makes every N-th
call raise RuntimeError('injected failure') after that time.
"""

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from univ_ros import lifecycle_node, perception_node


def faulty_loader(seconds: float, fail_every: int) -> Callable[[Any], Any]:
    """load_predictor whose predict takes at least ``seconds`` and fails every N-th call."""

    def load(config: Any) -> Any:
        from univ_core.inference import load_predictor

        predictor = load_predictor(config)
        predict, calls = predictor.predict, [0]

        def slow_predict(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = predict(*args, **kwargs)
            time.sleep(max(0.0, seconds - (time.perf_counter() - start)))
            calls[0] += 1
            if fail_every and calls[0] % fail_every == 0:
                raise RuntimeError('injected failure')
            return result

        predictor.predict = slow_predict
        return predictor

    return load


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--managed', action='store_true')
    parser.add_argument('--predict-seconds', type=float, default=0.0)
    parser.add_argument('--fail-every', type=int, default=0)
    args, ros_args = parser.parse_known_args()
    load = (faulty_loader(args.predict_seconds, args.fail_every)
            if args.predict_seconds > 0 or args.fail_every else perception_node.default_loader)
    main = lifecycle_node.main if args.managed else perception_node.main
    sys.exit(main([sys.argv[0], *ros_args], load=load))
