"""Test helper run as a separate process: one camera publishing small stamped images.

usage: python test/ros_camera.py TOPIC RATE_HZ SECONDS [--latency S]

Each frame is stamped with the node clock at "capture", then published ``--latency`` seconds
later (a camera pipeline's delay), at RATE_HZ from its own clock, so two such processes are
unsynchronised cameras. Reliable QoS: the recorder must see every frame. Once a subscriber is
matched it prints ``ready`` and starts publishing when a line arrives on stdin, so a test can
start several cameras together however long each took to start (seconds apart under load).
"""

import argparse
import sys
import time

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('topic')
    parser.add_argument('rate', type=float)
    parser.add_argument('seconds', type=float)
    parser.add_argument('--latency', type=float, default=0.0)
    args = parser.parse_args()
    rclpy.init()
    node = Node('univ_test_camera')
    publisher = node.create_publisher(Image, args.topic, QoSProfile(depth=50))
    msg = Image(height=4, width=4, encoding='mono8', step=4)
    msg.data = np.zeros(16, np.uint8).tobytes()
    deadline = time.monotonic() + 60
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    print('ready', flush=True)
    sys.stdin.readline()
    start = time.monotonic()
    for k in range(int(args.seconds * args.rate)):
        time.sleep(max(0.0, start + k / args.rate - time.monotonic()))
        msg.header.stamp = node.get_clock().now().to_msg()
        time.sleep(args.latency)
        publisher.publish(msg)
    time.sleep(0.5)  # reliable delivery of the last frames
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
