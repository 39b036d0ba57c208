"""Rosbag tools: dataset -> bag, bag replay evaluation (offline and online), ``univ demo``.

Modules: :mod:`~univ_ros.replay.topics` (topic names), :mod:`~univ_ros.replay.bagio` (rosbags
type store with vision_msgs, reading and writing), :mod:`~univ_ros.replay.offline`,
:mod:`~univ_ros.replay.online`, :mod:`~univ_ros.replay.report`. Importing this package loads
nothing heavy; the submodules import torch (through univ_core) or rclpy only where needed.
"""
