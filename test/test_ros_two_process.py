"""Real rclpy across two processes: a talker subprocess, a listener in this process."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray


def test_image_and_detections_cross_processes() -> None:
    talker = subprocess.Popen([sys.executable, str(Path(__file__).with_name('ros_talker.py'))])
    rclpy.init()
    node = Node('univ_test_listener')
    got: dict[str, object] = {}
    node.create_subscription(Image, 'talker/image', lambda m: got.setdefault('image', m), 10)
    node.create_subscription(
        Detection2DArray, 'talker/detections', lambda m: got.setdefault('dets', m), 10)
    try:
        deadline = time.monotonic() + 30.0
        while len(got) < 2 and time.monotonic() < deadline and talker.poll() is None:
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        talker.send_signal(signal.SIGINT)
        talker.wait(timeout=10)
    assert set(got) == {'image', 'dets'}, f'received only {sorted(got)} within 30 s'
    image, dets = got['image'], got['dets']
    assert (image.height, image.width, image.encoding, image.step) == (4, 5, 'rgb8', 15)
    pixels = np.frombuffer(bytes(image.data), np.uint8).reshape(4, 5, 3)
    assert np.all(np.diff(pixels.reshape(-1).astype(int)) == 1)  # arange + constant offset
    assert image.header.frame_id == 'thermal_optical'
    (det,) = dets.detections
    assert det.header.frame_id == 'thermal_optical'
    assert (det.bbox.center.position.x, det.bbox.center.position.y) == (10.5, 20.25)
    assert (det.bbox.size_x, det.bbox.size_y) == (4.0, 8.0)
    assert det.results[0].hypothesis.class_id == 'person'
    assert det.results[0].hypothesis.score == pytest.approx(0.875)
