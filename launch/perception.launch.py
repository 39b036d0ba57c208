"""``ros2 launch univ_ros perception.launch.py``: the UNIV perception node and its parameters.

The node reads ``params_file`` (default: the installed ``config/perception.yaml``); the launch
arguments ``device``, ``model`` and ``use_sim_time`` override the file, and ``rgb_topic`` /
``thermal_topic`` remap the node's camera inputs (``rgb/image_raw``, ``thermal/image_raw``).
Only launch APIs that exist in Humble are used.

Example::

    ros2 launch univ_ros perception.launch.py namespace:=front device:=cuda
        rgb_topic:=/camera/color/image_raw thermal_topic:=/flir/image_raw  (one line)
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = 'univ_ros'
# The node's own input names (config/perception.yaml: rgb_topic, thermal_topic).
RGB_INPUT = 'rgb/image_raw'
THERMAL_INPUT = 'thermal/image_raw'


def generate_launch_description() -> LaunchDescription:
    """Launch arguments and one plain ``Node`` action."""
    share = get_package_share_directory(PACKAGE)
    arguments = [
        (
            'params_file',
            os.path.join(share, 'config', 'perception.yaml'),
            'YAML file with the node parameters (/**: ros__parameters:)',
        ),
        ('namespace', '', 'namespace of the node and of its relative topics'),
        ('rgb_topic', RGB_INPUT, 'RGB camera image topic (remaps rgb/image_raw)'),
        ('thermal_topic', THERMAL_INPUT, 'thermal camera image topic (remaps thermal/image_raw)'),
        ('device', 'auto', 'inference device: auto | cpu | cuda | cuda:N (overrides the file)'),
        ('model', '', "UNIV model file; '' = the default model (overrides the file)"),
        ('use_sim_time', 'false', 'use /clock (bag replay) instead of the system clock'),
    ]
    overrides = {
        'device': ParameterValue(LaunchConfiguration('device'), value_type=str),
        'model': ParameterValue(LaunchConfiguration('model'), value_type=str),
        'use_sim_time': ParameterValue(LaunchConfiguration('use_sim_time'), value_type=bool),
    }
    node = Node(
        package=PACKAGE,
        executable='perception_node',
        name='univ_perception',
        namespace=LaunchConfiguration('namespace'),
        parameters=[LaunchConfiguration('params_file'), overrides],
        remappings=[
            (RGB_INPUT, LaunchConfiguration('rgb_topic')),
            (THERMAL_INPUT, LaunchConfiguration('thermal_topic')),
        ],
        output='screen',
        emulate_tty=True,
    )
    declared = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, default, description in arguments
    ]
    return LaunchDescription([*declared, node])
