"""Runs the perception node in its own process for the tests, optionally with a slow Predictor.

usage: python test/node_harness.py [--predict-seconds S] --ros-args -p model:=... [...]

``--predict-seconds S`` makes every Predictor.predict call last at least S seconds (the load
test: a Predictor slower than the camera frame period).
"""

import argparse
import sys
import time
from collections.abc import Callable

from univ_core.inference import Predictor, PredictorConfig, load_predictor
from univ_ros.perception_node import main


def slow_loader(seconds: float) -> Callable[[PredictorConfig], Predictor]:
    """load_predictor whose Predictor.predict takes at least ``seconds``."""

    def load(config: PredictorConfig) -> Predictor:
        predictor = load_predictor(config)
        predict = predictor.predict

        def slow_predict(*args, **kwargs):
            start = time.perf_counter()
            result = predict(*args, **kwargs)
            time.sleep(max(0.0, seconds - (time.perf_counter() - start)))
            return result

        predictor.predict = slow_predict
        return predictor

    return load


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--predict-seconds', type=float, default=0.0)
    args, ros_args = parser.parse_known_args()
    load = slow_loader(args.predict_seconds) if args.predict_seconds > 0 else load_predictor
    sys.exit(main([sys.argv[0], *ros_args], load=load))
