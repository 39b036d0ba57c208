"""Test helpers for the perception node: the node in a subprocess, cameras and listeners here.

:class:`NodeProcess` runs ``test/node_harness.py`` (one process); :class:`Rig` is an rclpy node
in the test process (the other process) that publishes real RGB-T pairs as cameras do and
records every node output with its arrival time.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from univ_ros.conversions import fill_image

REPO = Path(__file__).resolve().parents[1]
HARNESS = Path(__file__).with_name('node_harness.py')
CAMERA_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
RGB_FRAME, THERMAL_FRAME = 'rgb_camera_optical', 'thermal_camera_optical'


def load_pairs(data_dir: Path, count: int = 8) -> list[tuple[np.ndarray, np.ndarray]]:
    """Real MSRS pairs, halved to 320x240: ((240, 320, 3) uint8 RGB, (240, 320) uint8 IR).

    Halved so that every message (at most 230 KB) fits Fast DDS's default 512 KB shared-memory
    segment: bigger best-effort images travel as fragmented UDP on localhost and are lost under
    load, a transport setting that is not what these tests are about.
    """
    names = sorted(p.name for p in (data_dir / 'msrs_mini/train/vi').glob('*.png'))[:count]
    pairs = []
    for name in names:
        bgr = cv2.imread(str(data_dir / 'msrs_mini/train/vi' / name), cv2.IMREAD_COLOR)
        ir = cv2.imread(str(data_dir / 'msrs_mini/train/ir' / name), cv2.IMREAD_GRAYSCALE)
        half = (bgr.shape[1] // 2, bgr.shape[0] // 2)
        rgb = cv2.cvtColor(cv2.resize(bgr, half, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        pairs.append((rgb, cv2.resize(ir, half, interpolation=cv2.INTER_AREA)))
    assert len(pairs) == count, f'expected {count} pairs in {data_dir}/msrs_mini/train'
    return pairs


def image_msg(array: np.ndarray, encoding: str, frame_id: str) -> Image:
    msg = fill_image(Image(), array, encoding)
    msg.header.frame_id = frame_id
    return msg


class NodeProcess:
    """The perception node in a subprocess, namespaced; its log goes to ``log_path``."""

    def __init__(
        self, namespace: str, params: dict, log_path: Path, predict_seconds: float = 0.0
    ) -> None:
        args = [
            sys.executable,
            str(HARNESS),
            '--predict-seconds',
            str(predict_seconds),
            '--ros-args',
            '-r',
            f'__ns:={namespace}',
            '--params-file',  # the shipped configuration; -p below overrides it
            str(REPO / 'config' / 'perception.yaml'),
        ]
        for name, value in params.items():
            args += ['-p', f'{name}:={value}']
        env = dict(
            os.environ,
            RCUTILS_LOGGING_BUFFERED_STREAM='0',
            PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get('PYTHONPATH')])]),
        )
        self.log_path = log_path
        self._log = open(log_path, 'wb')  # noqa: SIM115  (closed in stop())
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors='replace')

    def rss_mb(self) -> float:
        status = Path(f'/proc/{self.process.pid}/status').read_text()
        return int(status.split('VmRSS:')[1].split()[0]) / 1024.0

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@dataclass
class Received:
    """Messages of one output topic, each with its arrival time (time.monotonic())."""

    messages: list = field(default_factory=list)
    times: list = field(default_factory=list)  # time.monotonic() at arrival
    wall: list = field(default_factory=list)  # time.time() at arrival (the ROS system clock)

    def add(self, msg: object) -> None:
        self.messages.append(msg)
        self.times.append(time.monotonic())
        self.wall.append(time.time())

    def since(self, t: float) -> list:
        return [m for m, at in zip(self.messages, self.times, strict=True) if at >= t]


class Rig:
    """Cameras and output listeners of one namespaced perception node, spun in a thread."""

    def __init__(self, namespace: str, camera_qos: QoSProfile = CAMERA_QOS) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node('univ_test_rig', namespace=namespace, context=self.context)
        self.status_prefix = f'{namespace}/univ_perception:'  # our node's DiagnosticStatus
        self.rgb_pub = self.node.create_publisher(Image, 'rgb/image_raw', camera_qos)
        self.thermal_pub = self.node.create_publisher(Image, 'thermal/image_raw', camera_qos)
        self.outputs = {name: Received() for name in ('segmentation', 'color', 'detections')}
        self.diagnostics = Received()
        out = 'univ_perception/'
        for name, kind, topic in (
            ('segmentation', Image, 'segmentation'),
            ('color', Image, 'segmentation/color'),
            ('detections', Detection2DArray, 'detections'),
        ):
            self.node.create_subscription(kind, out + topic, self.outputs[name].add, 50)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 50)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()

    def now(self) -> object:
        return self.node.get_clock().now().to_msg()

    def publish(self, rgb: Image | None, thermal: Image | None, skew_ns: int = 2_000_000):
        """Publish one pair stamped now (thermal ``skew_ns`` later); returns the RGB stamp."""
        stamp = self.now()
        if rgb is not None:
            rgb.header.stamp = stamp
            self.rgb_pub.publish(rgb)
        if thermal is not None:
            thermal.header.stamp.sec = stamp.sec + (stamp.nanosec + skew_ns) // 1_000_000_000
            thermal.header.stamp.nanosec = (stamp.nanosec + skew_ns) % 1_000_000_000
            self.thermal_pub.publish(thermal)
        return stamp

    def wait_until(self, condition, timeout: float, what: str) -> float:
        """Poll ``condition()`` every 20 ms; returns the seconds it took, fails after timeout."""
        start = time.monotonic()
        while not condition():
            assert time.monotonic() - start < timeout, f'{what}: not within {timeout} s'
            time.sleep(0.02)
        return time.monotonic() - start

    def wait_for_node(self, node: NodeProcess, timeout: float = 90.0) -> None:
        """Until the node's input subscriptions match the camera publishers."""
        self.wait_until(
            lambda: (
                not node.alive()
                or (
                    self.rgb_pub.get_subscription_count() > 0
                    and self.thermal_pub.get_subscription_count() > 0
                )
            ),
            timeout,
            'node subscriptions',
        )
        assert node.alive(), f'node exited:\n{node.log()[-3000:]}'

    def late_label_info(self, timeout: float = 10.0) -> LabelInfo:
        """Subscribe to ~/label_info now (transient local) and return the first message."""
        got = []
        qos = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(LabelInfo, 'univ_perception/label_info', got.append, qos)
        self.wait_until(lambda: got, timeout, 'late LabelInfo')
        return got[0]

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        if any(s.name.startswith(self.status_prefix) for s in msg.status):  # this rig's node only
            self.diagnostics.add(msg)

    def call(
        self, service_type: type, name: str, request: object, timeout: float = 10.0
    ) -> object:
        """Call service ``name`` (relative to the rig's namespace) and return the response."""
        client = self.node.create_client(service_type, name)
        try:
            assert client.wait_for_service(timeout_sec=timeout), f'no service {name}'
            future = client.call_async(request)
            self.wait_until(future.done, timeout, f'{name} response')
            return future.result()
        finally:
            self.node.destroy_client(client)

    def status_values(self, msg: DiagnosticArray) -> dict:
        (status,) = [s for s in msg.status if s.name.startswith(self.status_prefix)]
        return {
            'level': status.level,
            'message': status.message,
            **{kv.key: kv.value for kv in status.values},
        }

    def last_status(self) -> dict:
        return self.status_values(self.diagnostics.messages[-1])

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._spinner.join(timeout=5)


def stream(rig: Rig, seconds: float, make_pair, rate: float = 30.0) -> list:
    """Publish ``make_pair(i) -> (rgb msg | None, thermal msg | None)`` at ``rate`` Hz.

    Returns:
        [(i, RGB stamp)] in publishing order.
    """
    published, start = [], time.monotonic()
    for i in range(int(seconds * rate)):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        rgb, thermal = make_pair(i)
        published.append((i, rig.publish(rgb, thermal)))
    return published
