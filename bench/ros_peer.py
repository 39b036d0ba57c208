"""The far end of bench_ros.py, in its own process: a raw echo node or the perception node.

usage: python bench/ros_peer.py echo | stub | model --backend torch|onnxruntime|baseline
                                [--input-size H W] -- [--ros-args ...]

- echo: subscribes to rgb/image_raw and thermal/image_raw and republishes each thermal Image
  unchanged on echo/image (no conversion: the raw rclpy cost of the same images);
- stub: the perception node with a zero-cost Predictor (a fixed 512x640 mask + 10 boxes):
  decoding, pairing, output conversion and publishing only;
- model: the perception node with the default architecture (random heads) on the CPU.
"""

import argparse
import sys
from dataclasses import replace

import numpy as np
from common import baseline_predict, default_model

ROS_QOS_DEPTH = 5


def echo(ros_args: list[str]) -> int:
    """Republish every thermal image as it arrived."""
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    rclpy.init(args=ros_args)
    node = Node('univ_bench_echo')
    qos = QoSProfile(depth=ROS_QOS_DEPTH, reliability=ReliabilityPolicy.RELIABLE)
    out = node.create_publisher(Image, 'echo/image', qos)
    node.create_subscription(Image, 'rgb/image_raw', lambda msg: None, qos)
    node.create_subscription(Image, 'thermal/image_raw', out.publish, qos)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def stub_loader(config):
    """A Predictor whose predict returns one fixed Prediction at once (tiny model inside)."""
    from univ_core.inference import Detections, Prediction, Predictor
    from univ_core.models.model_file import ModelSpec, build_model

    spec = ModelSpec('vit_small_patch14_dinov2', [f'c{i}' for i in range(9)],
                     ['person', 'bicycle', 'car'], (28, 28), head_channels=32,
                     backbone_overrides={'depth': 1, 'embed_dim': 32, 'num_heads': 2})
    predictor = Predictor(build_model(spec), spec.seg_classes, spec.det_classes,
                          spec.input_size, replace(config, device='cpu'))
    mask = (np.arange(512 * 640, dtype=np.int64).reshape(512, 640) // 4099 % 9).astype(np.uint8)
    boxes = np.array([[10.0 * i, 20.0, 10.0 * i + 40, 90.0] for i in range(10)], np.float32)
    fixed = Prediction(mask, np.full(mask.shape, 0.9, np.float32), Detections(
        boxes, np.zeros(10, np.int64), np.full(10, 0.8, np.float32), ['person'] * 10), 'fused')
    predictor.predict = lambda rgb=None, thermal=None, mode='fused': fixed
    return predictor


def model_loader(backend: str, input_size: tuple[int, int]):
    """Loader of a default-architecture Predictor: torch, onnxruntime or the baseline."""
    from univ_core.inference import Predictor

    def load(config):
        model, spec = default_model(input_size)
        settings = replace(config, device='cpu', input_size=None, precision='fp32',  # not auto
                           backend='onnxruntime' if backend == 'onnxruntime' else 'torch')
        predictor = Predictor(model, spec.seg_classes, spec.det_classes, spec.input_size,
                              settings)
        if backend == 'baseline':
            predictor.predict = lambda rgb, thermal, mode='fused': baseline_predict(
                predictor, rgb, thermal)
        predictor.warmup((512, 640), runs=1)
        return predictor

    return load


def main() -> int:
    argv = sys.argv[1:]
    ros_args = argv[argv.index('--') + 1:] if '--' in argv else []
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('mode', choices=('echo', 'stub', 'model'))
    parser.add_argument('--backend', default='torch')
    parser.add_argument('--input-size', type=int, nargs=2, default=[224, 280])
    args = parser.parse_args(argv[: argv.index('--')] if '--' in argv else argv)
    if args.mode == 'echo':
        return echo(['ros_peer', *ros_args])
    from univ_ros.perception_node import main as node_main

    load = stub_loader if args.mode == 'stub' else model_loader(args.backend,
                                                                tuple(args.input_size))
    return node_main(['ros_peer', *ros_args], load=load)


if __name__ == '__main__':
    raise SystemExit(main())
