"""``ros2 launch univ_ros perception.launch.py``: the UNIV perception node and its parameters.

By default the node runs managed (a lifecycle node, ``perception_lifecycle_node``) and is
configured and activated at launch (``autostart``); ``managed:=false`` starts the plain
``perception_node`` instead, ``autostart:=false`` leaves the managed node unconfigured for a
lifecycle manager or ``ros2 lifecycle set``. The node reads ``params_file`` (default: the
installed ``config/perception.yaml``); the launch arguments ``device``, ``model`` and
``use_sim_time`` override the file, and ``rgb_topic`` / ``thermal_topic`` remap the node's
camera inputs (``rgb/image_raw``, ``thermal/image_raw``). ``fastdds_profile`` (default: the
environment's FASTRTPS_DEFAULT_PROFILES_FILE, else the installed
``config/fastdds_large_images.xml``) is set for the node, so full-size images travel through
shared memory (see that file). Only launch APIs that exist in Humble are used.

Example::

    ros2 launch univ_ros perception.launch.py namespace:=front device:=cuda
        rgb_topic:=/camera/color/image_raw thermal_topic:=/flir/image_raw  (one line)
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.conditions import IfCondition, UnlessCondition
from launch.events.matchers import matches_action
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from lifecycle_msgs.msg import Transition

PACKAGE = 'univ_ros'
NODE_NAME = 'univ_perception'
# The node's own input names (config/perception.yaml: rgb_topic, thermal_topic).
RGB_INPUT = 'rgb/image_raw'
THERMAL_INPUT = 'thermal/image_raw'
PROFILE_VARIABLES = ('FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_DEFAULT_PROFILES_FILE')


def generate_launch_description() -> LaunchDescription:
    """Launch arguments, the Fast DDS profile, the (managed or plain) node, auto-activation."""
    share = get_package_share_directory(PACKAGE)
    profile = EnvironmentVariable(
        PROFILE_VARIABLES[0],
        default_value=os.path.join(share, 'config', 'fastdds_large_images.xml'))
    arguments = [
        ('params_file', os.path.join(share, 'config', 'perception.yaml'),
         'YAML file with the node parameters (/**: ros__parameters:)'),
        ('namespace', '', 'namespace of the node and of its relative topics'),
        ('rgb_topic', RGB_INPUT, 'RGB camera image topic (remaps rgb/image_raw)'),
        ('thermal_topic', THERMAL_INPUT, 'thermal camera image topic (remaps thermal/image_raw)'),
        ('device', 'auto', 'inference device: auto | cpu | cuda | cuda:N (overrides the file)'),
        ('model', '', "UNIV model file; '' = the default model (overrides the file)"),
        ('use_sim_time', 'false', 'use /clock (bag replay) instead of the system clock'),
        ('managed', 'true', 'true: lifecycle node (perception_lifecycle_node) | false: the '
                            'plain perception_node, running at once'),
        ('autostart', 'true', 'managed node: configure and activate it at launch (false: '
                              'leave it unconfigured for ros2 lifecycle set / a manager)'),
        ('fastdds_profile', profile, "Fast DDS XML profile for the node ('' = Fast DDS "
                                     'defaults: images over 512 KiB then go over UDP)'),
    ]
    overrides = {
        'device': ParameterValue(LaunchConfiguration('device'), value_type=str),
        'model': ParameterValue(LaunchConfiguration('model'), value_type=str),
        'use_sim_time': ParameterValue(LaunchConfiguration('use_sim_time'), value_type=bool),
    }
    common = dict(
        package=PACKAGE,
        name=NODE_NAME,
        namespace=LaunchConfiguration('namespace'),
        parameters=[LaunchConfiguration('params_file'), overrides],
        remappings=[
            (RGB_INPUT, LaunchConfiguration('rgb_topic')),
            (THERMAL_INPUT, LaunchConfiguration('thermal_topic')),
        ],
        output='screen',
        emulate_tty=True,
    )
    managed = IfCondition(LaunchConfiguration('managed'))
    plain = Node(executable='perception_node',
                 condition=UnlessCondition(LaunchConfiguration('managed')), **common)
    lifecycle = LifecycleNode(executable='perception_lifecycle_node', condition=managed,
                              **common)
    autostart = IfCondition(LaunchConfiguration('autostart'))
    configure = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(lifecycle),
                                            transition_id=Transition.TRANSITION_CONFIGURE),
                          condition=autostart)
    activate_when_configured = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=lifecycle, start_state='configuring', goal_state='inactive',
            entities=[EmitEvent(event=ChangeState(
                lifecycle_node_matcher=matches_action(lifecycle),
                transition_id=Transition.TRANSITION_ACTIVATE))]),
        condition=autostart)
    declared = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, default, description in arguments
    ]
    environment = [SetEnvironmentVariable(name, LaunchConfiguration('fastdds_profile'))
                   for name in PROFILE_VARIABLES]
    return LaunchDescription([*declared, *environment, plain, lifecycle,
                              activate_when_configured, configure])
