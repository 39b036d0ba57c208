"""Online replay plumbing (rclpy): start the node, publish a bag's raw CDR on time, capture.

Images are published as the bag stores them (raw CDR, ``Publisher.publish(bytes)``), at the
recorded pace divided by ``rate``; the node's ``~/segmentation`` and ``~/detections`` are
received raw (``raw=True``) with their arrival time. Publish and arrival times come from one
monotonic clock in this process, so latency = arrival - publication of the source image.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from univ_ros.replay import topics as T
from univ_ros.replay.answers import node_values

OUTPUTS = {T.SEGMENTATION: Image, T.DETECTIONS: Detection2DArray}
NODE_PARAMS = ('model', 'mode', 'device', 'sync_slop', 'precision', 'score_threshold',
               'nms_iou', 'max_detections')


@dataclass
class Capture:
    """What came back from the node."""

    published: dict = field(default_factory=dict)  # (topic, stamp ns) -> publish time (s)
    outputs: dict = field(default_factory=dict)  # topic -> [(arrival s, raw CDR)]
    diagnostics: list = field(default_factory=list)  # [(arrival s, node status values)]
    detection_classes: list | None = None  # the node's ~/detections/label_info, when received
    started: float = 0.0  # first publication, monotonic s
    finished: float = 0.0  # last publication, monotonic s


def start_node(params: dict, cameras: dict[str, str], params_file: Path | None,
               log: Path) -> subprocess.Popen:
    """``univ_perception`` as a child process; its stdout + stderr go to ``log``.

    ``cameras``: its camera parameters (``rgb_topic``, ``rgb_transport``, ``thermal_topic``...).
    """
    command = [sys.executable, '-m', 'univ_ros.perception_node', '--ros-args']
    if params_file is not None:
        command += ['--params-file', str(params_file)]
    overrides = {**cameras, 'qos.reliability': params.get('qos.reliability', 'reliable')}
    overrides.update({k: params[k] for k in NODE_PARAMS if params.get(k) not in (None, '')})
    for key, value in overrides.items():
        command += ['-p', f'{key}:={value}']
    with open(log, 'wb') as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ))


def stop_node(process: subprocess.Popen) -> None:
    """SIGINT (the node shuts down cleanly), then kill after 10 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ReplayClient:
    """A node publishing the camera topics and capturing the perception outputs.

    Use as a context manager: it creates its own rclpy context and spins in a thread.

    Args:
        image_topics: camera topic -> its rclpy message class (Image or CompressedImage).
    """

    def __init__(self, image_topics: dict[str, type]) -> None:
        self.capture = Capture()
        self._lock = threading.Lock()
        self._context = rclpy.Context()
        rclpy.init(context=self._context)
        self.node = Node('univ_replay', context=self._context)
        qos = QoSProfile(depth=10)  # reliable: matches best-effort and reliable subscribers
        self.publishers_by_topic = {t: self.node.create_publisher(kind, t, qos)
                                    for t, kind in image_topics.items()}
        self.subscriptions_by_topic = {
            topic: self.node.create_subscription(kind, topic, self._keeper(topic), 50, raw=True)
            for topic, kind in OUTPUTS.items()}
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._diagnostics, 10,
                                      raw=True)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(LabelInfo, f'{T.NODE}/detections/label_info',
                                      self._label_info, latched)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self.node)
        self._spinner = threading.Thread(target=self._executor.spin, daemon=True)

    def __enter__(self) -> 'ReplayClient':
        self._spinner.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self._context)

    def _keeper(self, topic: str):
        def keep(raw: bytes) -> None:
            arrival = time.monotonic()
            with self._lock:
                self.capture.outputs.setdefault(topic, []).append((arrival, raw))
        return keep

    def _diagnostics(self, raw: bytes) -> None:
        values = node_values(raw)
        if values:
            with self._lock:
                self.capture.diagnostics = (self.capture.diagnostics
                                            + [(time.monotonic(), values)])[-200:]

    def _label_info(self, msg: LabelInfo) -> None:
        with self._lock:
            self.capture.detection_classes = [c.class_name for c in msg.class_map]

    def statuses(self, since: float) -> list[tuple[float, dict]]:
        """(arrival, node status values) received after ``since`` (monotonic s)."""
        with self._lock:
            return [(at, v) for at, v in self.capture.diagnostics if at > since]

    def connected(self) -> bool:
        """True once the node subscribes to every camera topic and publishes detections."""
        return (all(p.get_subscription_count() > 0 for p in self.publishers_by_topic.values())
                and self.subscriptions_by_topic[T.DETECTIONS].get_publisher_count() > 0)

    def outputs_of(self, topic: str) -> list[tuple[float, bytes]]:
        """A copy of what arrived on ``topic`` so far."""
        with self._lock:
            return list(self.capture.outputs.get(topic, []))

    def count(self, topic: str) -> int:
        """Outputs received on ``topic`` so far."""
        with self._lock:
            return len(self.capture.outputs.get(topic, []))

    def publish(self, topic: str, raw: bytes, key: tuple[str, int] | None = None) -> None:
        """Publish raw CDR on a camera topic; ``key`` (topic, stamp ns) records the time."""
        now = time.monotonic()
        self.publishers_by_topic[topic].publish(raw)
        if key is not None:
            with self._lock:
                self.capture.published[key] = now

    def play(self, messages: Iterator[tuple[str, int, int, bytes]], rate: float) -> None:
        """Publish (topic, bag time ns, header stamp ns, raw) at the recorded pace / ``rate``."""
        start = bag_start = None
        for topic, bag_ns, stamp, raw in messages:
            if start is None:
                start, bag_start = time.monotonic(), bag_ns
                self.capture.started = start
            due = start + (bag_ns - bag_start) * 1e-9 / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.publish(topic, raw, (topic, stamp))
        self.capture.finished = time.monotonic()
