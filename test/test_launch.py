"""``ros2 launch univ_ros perception.launch.py`` for real (ros2cli, launch, launch_ros).

setup.sh installs the ROS 2 command line and registers univ_ros in the venv's ament index;
conftest puts the venv on AMENT_PREFIX_PATH. The launch runs as a subprocess in its own process
group (as a terminal runs it), real pairs go in, outputs are checked with rclpy and with
``ros2 topic echo``, the ROS command line inspects the node, and Ctrl-C (SIGINT to the group)
must stop everything cleanly: exit code 0.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from perception_rig import (
    DEADLINE,
    MAX_FRAME_LOSS,
    RGB_FRAME,
    THERMAL_FRAME,
    Rig,
    image_msg,
    key,
    load_pairs,
    stream,
)

ROS2 = str(Path(sys.prefix) / 'bin' / 'ros2')
REPO = Path(__file__).resolve().parents[1]
ARGUMENTS = ('params_file', 'namespace', 'rgb_topic', 'thermal_topic', 'device', 'model',
             'use_sim_time', 'managed', 'autostart', 'fastdds_profile')


def ros2(*args: str, timeout: float = DEADLINE) -> str:
    """Run a ros2 command; its stdout (fails on a non-zero exit)."""
    run = subprocess.run([ROS2, *args], capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, f'ros2 {" ".join(args)}:\n{run.stdout}\n{run.stderr}'
    return run.stdout


def ros2_until(pattern: str, *args: str, timeout: float = DEADLINE) -> str:
    """Repeat a ros2 query until its output matches ``pattern`` (graph discovery takes time)."""
    deadline, out = time.monotonic() + timeout, ''
    while time.monotonic() < deadline:
        run = subprocess.run([ROS2, *args], capture_output=True, text=True, timeout=timeout)
        out = run.stdout + run.stderr
        if re.search(pattern, out):
            return out
        time.sleep(0.5)
    raise AssertionError(f'ros2 {" ".join(args)}: no {pattern!r} within {timeout} s:\n{out}')


class Launch:
    """``ros2 launch univ_ros perception.launch.py ARGS`` in its own process group."""

    def __init__(self, log_path: Path, *arguments: str, unset: tuple[str, ...] = ()) -> None:
        self.log_path = log_path
        self._log = open(log_path, 'wb')  # noqa: SIM115  (closed in interrupt())
        env = {k: v for k, v in os.environ.items() if k not in unset}
        self.process = subprocess.Popen(
            [ROS2, 'launch', 'univ_ros', 'perception.launch.py', *arguments],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**env, 'RCUTILS_LOGGING_BUFFERED_STREAM': '0'})

    def log(self) -> str:
        return self.log_path.read_text(errors='replace')

    def wait_for_log(self, pattern: str, timeout: float = DEADLINE) -> re.Match:
        deadline = time.monotonic() + timeout
        while not (match := re.search(pattern, self.log())):
            assert self.process.poll() is None, f'launch exited:\n{self.log()[-3000:]}'
            assert time.monotonic() < deadline, f'no {pattern!r} within {timeout} s'
            time.sleep(0.1)
        return match

    def interrupt(self) -> int:
        """Ctrl-C as a terminal sends it: SIGINT to the whole process group; the exit code."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
        return self.process.returncode


@contextlib.contextmanager
def launched(log_path: Path, *arguments: str, unset: tuple[str, ...] = ()):
    launch = Launch(log_path, *arguments, unset=unset)
    try:
        yield launch
    finally:
        launch.interrupt()
        subprocess.run([ROS2, 'daemon', 'stop'], capture_output=True, timeout=60)


def test_show_args_lists_every_argument_with_its_description() -> None:
    out = ros2('launch', 'univ_ros', 'perception.launch.py', '--show-args')
    declared = re.findall(r"^    '(\w+)':$", out, re.MULTILINE)
    assert tuple(declared) == ARGUMENTS
    share = Path(ros2('pkg', 'prefix', 'univ_ros').strip()) / 'share' / 'univ_ros'
    assert f"(default: '{share / 'config' / 'perception.yaml'}')" in out
    assert (share / 'config' / 'perception.yaml').resolve() == REPO / 'config/perception.yaml'
    assert (share / 'config' / 'fastdds_large_images.xml').is_file()


def test_ros2_launch_runs_the_managed_node_end_to_end(toy_model, data_dir, tmp_path) -> None:
    pairs = load_pairs(data_dir, 4, 'msrs')
    cameras = [(image_msg(rgb, 'rgb8', RGB_FRAME), image_msg(ir, 'mono8', THERMAL_FRAME))
               for rgb, ir in pairs]
    node_name = '/launched/univ_perception'
    with launched(tmp_path / 'launch.log', 'namespace:=launched', f'model:={toy_model}',
                  'device:=cpu', 'rgb_topic:=/cams/rgb/image_raw',
                  'thermal_topic:=/cams/thermal/image_raw',
                  unset=('FASTRTPS_DEFAULT_PROFILES_FILE',)) as launch:  # the launch default
        pid = int(launch.wait_for_log(r'perception_lifecycle_node-1\]: process started with '
                                      r'pid \[(\d+)\]').group(1))
        launch.wait_for_log('activated: subscribed to the cameras')
        assert 'rgb camera: /cams/rgb/image_raw' in launch.log()  # remapped by the launch
        environ = Path(f'/proc/{pid}/environ').read_bytes().split(b'\0')
        assert (b'FASTRTPS_DEFAULT_PROFILES_FILE=' + str(Path(sys.prefix) / 'share/univ_ros/'
                'config/fastdds_large_images.xml').encode()) in environ
        echo = subprocess.Popen([ROS2, 'topic', 'echo', '--once', f'{node_name}/detections',
                                 'vision_msgs/msg/Detection2DArray'],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        rig = Rig('/launched', cameras='/cams')
        try:
            rig.wait_until(lambda: rig.rgb_pub.get_subscription_count() > 0
                           and rig.thermal_pub.get_subscription_count() > 0, DEADLINE,
                           'launched node subscribed')
            warm_up = []  # discovery and the first inference: not what the loss check is about
            while echo.poll() is None:  # until `ros2 topic echo --once` got one, at most 60 s
                warm_up += stream(rig, 1.0, lambda i: cameras[i % 4])
                assert len(warm_up) < 60 * 30, 'ros2 topic echo --once got nothing'
            before = rig.wait_until_idle({'rgb': len(warm_up), 'thermal': len(warm_up)})
            counted = {c: int(before[f'{c}_frames']) for c in ('rgb', 'thermal')}
            published = stream(rig, 4.0, lambda i: cameras[i % 4])  # steady state, 120 pairs
            final = rig.wait_until_idle({c: n + len(published) for c, n in counted.items()})
        finally:
            rig.close()
        echoed = echo.communicate(timeout=30)[0]
        assert f'frame_id: {RGB_FRAME}' in echoed and 'detections:' in echoed
        masks = rig.outputs['segmentation'].messages
        stamps = {key(stamp) for _, stamp, _ in warm_up + published}
        assert masks and all(key(m.header.stamp) in stamps and m.width == 640 for m in masks)
        received = {c: int(final[f'{c}_frames']) - n for c, n in counted.items()}
        print(f'launch: {len(warm_up)} warm-up pairs, then {len(published)} published, '
              f'received {received}')
        for camera, n in received.items():  # every frame counted once; best effort may drop a few
            assert (1 - MAX_FRAME_LOSS) * len(published) <= n <= len(published), (
                camera, final, counted, len(published))
        assert node_name in ros2_until(node_name, 'node', 'list')
        assert 'active [3]' in ros2_until(r'active \[3\]', 'lifecycle', 'get', node_name)
        assert str(toy_model) in ros2('param', 'get', node_name, 'model')
        label_info = ros2('topic', 'echo', '--once', '--qos-durability', 'transient_local',
                          '--qos-reliability', 'reliable', f'{node_name}/detections/label_info',
                          'vision_msgs/msg/LabelInfo', timeout=60)
        assert 'class_name: person' in label_info and 'class_name: car' in label_info
        assert 'Transitioning successful' in ros2('lifecycle', 'set', node_name, 'deactivate')
        launch.wait_for_log('model released: predictor freed True')
    assert launch.process.returncode == 0, launch.log()[-3000:]
    assert 'process has finished cleanly' in launch.log()
    assert 'Traceback' not in launch.log()


def test_ros2_launch_plain_node_with_managed_false(toy_model, tmp_path) -> None:
    node_name = '/plain/univ_perception'
    with launched(tmp_path / 'plain.log', 'namespace:=plain', f'model:={toy_model}',
                  'device:=cpu', 'managed:=false') as launch:
        launch.wait_for_log(r'\[perception_node-1\].*mode fused, device cpu')
        services = ros2_until(f'{node_name}/get_parameters', 'service', 'list')
        assert f'{node_name}/change_state' not in services  # not a lifecycle node
        assert 'perception_lifecycle_node' not in launch.log()
    assert launch.process.returncode == 0, launch.log()[-3000:]
    assert 'process has finished cleanly' in launch.log()


@pytest.fixture(autouse=True)
def _no_stray_daemon():
    """ros2 commands start a daemon; stop it even when a test fails early."""
    yield
    subprocess.run([ROS2, 'daemon', 'stop'], capture_output=True, timeout=60)
