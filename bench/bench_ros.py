"""ROS overhead and end-to-end node latency at 30 Hz (two processes, rclpy, localhost).

Rows (640x512 rgb8 + mono16 pairs published at 30 Hz, reliable QoS, same stamp on both):
1. raw rclpy: the far process republishes each thermal Image unchanged (echo) - the baseline
   cost of moving these images through rclpy and back;
2. the perception node with a zero-cost Predictor: decoding, pairing, output conversion
   (mono8 mask + Detection2DArray) and publishing; ratio to row 1 = the node's ROS overhead;
3. / 4. the node end to end with the default architecture on this CPU: baseline Predictor
   (eager, two forwards) vs the optimised one (onnxruntime, one batched forward).
Latency = arrival of the LAST output of a pair (mask and detections) - the pair's stamp.

usage: python bench/bench_ros.py [--seconds 5] [--model-seconds 15] [--input-size 224 280]
"""

import argparse
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import camera_pair, print_header, save_json, stats_ms, table

from univ_ros.replay.publisher import stop_node

PEER = Path(__file__).with_name('ros_peer.py')
NS = '/univ_bench'


def isolate_ros() -> None:
    """A private DDS domain on localhost for this run (inherited by the peer process)."""
    os.environ['ROS_DOMAIN_ID'] = str(random.SystemRandom().randint(101, 200))
    os.environ.pop('ROS_LOCALHOST_ONLY', None)  # deprecated in Jazzy
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'


class Cameras:
    """Publishes the pair and records when each output (by stamp) arrived."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from vision_msgs.msg import Detection2DArray

        from univ_ros.conversions import fill_image

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node('univ_bench_cameras', namespace=NS, context=self.context)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.rgb_pub = self.node.create_publisher(Image, 'rgb/image_raw', qos)
        self.thermal_pub = self.node.create_publisher(Image, 'thermal/image_raw', qos)
        rgb, thermal = camera_pair(0)
        self.rgb_msg = fill_image(Image(), rgb, 'rgb8')
        self.thermal_msg = fill_image(Image(), thermal, 'mono16')
        self.arrivals: dict[tuple[int, int], dict[str, float]] = {}
        self.lock = threading.Lock()
        for name, kind, topic in (('echo', Image, 'echo/image'),
                                  ('mask', Image, 'univ_perception/segmentation'),
                                  ('dets', Detection2DArray, 'univ_perception/detections')):
            self.node.create_subscription(kind, topic, lambda m, n=name: self._arrived(n, m), qos)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self.spinner.start()

    def _arrived(self, name: str, msg) -> None:
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        with self.lock:
            self.arrivals.setdefault(key, {})[name] = time.time()

    def ready(self, outputs: tuple[str, ...]) -> bool:
        topics = {'echo': 'echo/image', 'mask': 'univ_perception/segmentation',
                  'dets': 'univ_perception/detections'}
        inputs = (self.rgb_pub.get_subscription_count() > 0
                  and self.thermal_pub.get_subscription_count() > 0)
        return inputs and all(self.node.count_publishers(f'{NS}/{topics[o]}') > 0
                              for o in outputs)

    def stream(self, seconds: float, rate: float = 30.0) -> list[tuple[int, int]]:
        """Publish pairs at ``rate`` Hz (both stamped now); returns the stamps."""
        stamps, start = [], time.monotonic()
        for i in range(int(seconds * rate)):
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
            stamp = self.node.get_clock().now().to_msg()
            self.rgb_msg.header.stamp = self.thermal_msg.header.stamp = stamp
            self.rgb_pub.publish(self.rgb_msg)
            self.thermal_pub.publish(self.thermal_msg)
            stamps.append((stamp.sec, stamp.nanosec))
        return stamps

    def latencies(self, stamps, outputs: tuple[str, ...]) -> list[float]:
        """Seconds from stamp to the last of ``outputs`` for each pair that got all of them."""
        sent = set(stamps)
        with self.lock:
            done = [(k, v) for k, v in self.arrivals.items() if all(o in v for o in outputs)]
        return [max(v[o] for o in outputs) - (k[0] + k[1] * 1e-9) for k, v in done
                if k in sent]

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def run_case(cameras: Cameras, peer_args: list[str], outputs: tuple[str, ...], seconds: float,
             log: Path, settle: float) -> dict:
    """Start the peer, wait until matched, stream, wait ``settle`` s, stop; latency stats."""
    ros_args = ['--ros-args', '-r', f'__ns:={NS}', '-p', 'qos.reliability:=reliable',
                '-p', 'device:=cpu', '-p', 'publish_color:=false']
    command = [sys.executable, str(PEER), *peer_args, '--', *ros_args]
    with open(log, 'wb') as out:
        peer = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 240
            while not cameras.ready(outputs):
                if peer.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f'peer {peer_args} not ready: see {log}')
                time.sleep(0.1)
            time.sleep(1.0)  # discovery of every endpoint settles
            with cameras.lock:
                cameras.arrivals.clear()
            stamps = cameras.stream(seconds)
            time.sleep(settle)
        finally:
            stop_node(peer)
    lat = cameras.latencies(stamps, outputs)
    if not lat:
        raise RuntimeError(f'peer {peer_args}: no complete outputs; see {log}')
    return {**stats_ms(lat), 'published': len(stamps), 'outputs': len(lat),
            'outputs_per_s': len(lat) / seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=5.0, help='stream length, rows 1-2')
    parser.add_argument('--model-seconds', type=float, default=15.0, help='rows 3-4')
    parser.add_argument('--input-size', type=int, nargs=2, default=[224, 280])
    parser.add_argument('--logs', type=Path, default=Path('/tmp'))
    parser.add_argument('--json', default=None)
    args = parser.parse_args()
    isolate_ros()
    info = print_header('ROS overhead and end-to-end node latency at 30 Hz')
    size = [str(v) for v in args.input_size]
    cases = [
        ('raw rclpy echo (baseline)', ['echo'], ('echo',), args.seconds, 1.0),
        ('node, zero-cost Predictor', ['stub'], ('mask', 'dets'), args.seconds, 1.0),
        ('node e2e, eager 2 forwards', ['model', '--backend', 'baseline', '--input-size', *size],
         ('mask', 'dets'), args.model_seconds, 8.0),
        ('node e2e, onnxruntime batched', ['model', '--backend', 'onnxruntime',
                                           '--input-size', *size],
         ('mask', 'dets'), args.model_seconds, 8.0),
    ]
    cameras = Cameras()
    results = {}
    try:
        for i, (name, peer_args, outputs, seconds, settle) in enumerate(cases):
            log = args.logs / f'univ_bench_ros_{i}.log'
            results[name] = run_case(cameras, peer_args, outputs, seconds, log, settle)
    finally:
        cameras.close()
    names = list(results)
    ratio = {names[1]: results[names[1]]['p50'] / results[names[0]]['p50'],
             names[3]: results[names[2]]['p50'] / results[names[3]]['p50']}
    rows = [[n, r['p50'], r['p95'], r['outputs'], r['published'], r['outputs_per_s'],
             f'{ratio[n]:.2f}' if n in ratio else '-'] for n, r in results.items()]
    print('640x512 rgb8 + mono16 pairs at 30 Hz, reliable QoS, model input '
          f'{args.input_size[0]}x{args.input_size[1]}; ratio: row 2 = node p50 / raw p50 '
          '(overhead), row 4 = baseline p50 / optimised p50 (speed-up)\n')
    print(table(['case', 'p50 ms', 'p95 ms', 'pairs out', 'pairs in', 'out/s', 'ratio'], rows))
    save_json(args.json, {'machine': info, 'results': results, 'ratios': ratio})
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
