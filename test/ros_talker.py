"""Test helper run as a separate process: publishes a real Image and Detection2DArray at 20 Hz."""

import sys

import numpy as np
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose


def make_messages(node: Node, seq: int) -> tuple[Image, Detection2DArray]:
    image = Image()
    image.header.stamp = node.get_clock().now().to_msg()
    image.header.frame_id = 'thermal_optical'
    image.height, image.width, image.encoding, image.step = 4, 5, 'rgb8', 15
    image.data = (np.arange(60, dtype=np.uint8) + seq % 7).tobytes()
    det = Detection2D()
    det.header = image.header
    det.bbox.center.position.x, det.bbox.center.position.y = 10.5, 20.25
    det.bbox.size_x, det.bbox.size_y = 4.0, 8.0
    hyp = ObjectHypothesisWithPose()
    hyp.hypothesis.class_id, hyp.hypothesis.score = 'person', 0.875
    det.results.append(hyp)
    dets = Detection2DArray(header=image.header, detections=[det])
    return image, dets


def main() -> int:
    rclpy.init()
    node = Node('univ_test_talker')
    image_pub = node.create_publisher(Image, 'talker/image', 10)
    det_pub = node.create_publisher(Detection2DArray, 'talker/detections', 10)
    seq = [0]

    def tick() -> None:
        image, dets = make_messages(node, seq[0])
        image_pub.publish(image)
        det_pub.publish(dets)
        seq[0] += 1

    node.create_timer(0.05, tick)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
