"""Shared fixtures: an isolated ROS 2 graph per test session, the real data folder, Ray."""

import os
import random
import sys
from pathlib import Path

import pytest

TEST_DIR = Path(__file__).resolve().parent
REPO = TEST_DIR.parent
PROFILE = REPO / 'config' / 'fastdds_large_images.xml'


def pytest_configure(config: pytest.Config) -> None:
    # Set before any rclpy.init (here or in subprocesses, which inherit os.environ) so that
    # concurrent test sessions never see each other's nodes and nothing leaves this host.
    # Both variables: Humble reads ROS_LOCALHOST_ONLY, Jazzy ROS_AUTOMATIC_DISCOVERY_RANGE.
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(1, 100)))
    os.environ['ROS_LOCALHOST_ONLY'] = '1'
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    # The documented transport remedy (README, "Full-size images"): every process publishing
    # images (these test cameras and the nodes) uses the shipped Fast DDS profile.
    os.environ.setdefault('FASTRTPS_DEFAULT_PROFILES_FILE', str(PROFILE))
    # ros2 launch / ros2 run find univ_ros in this venv's ament index (tools/register_ament.py).
    prefixes = os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep)
    if sys.prefix not in prefixes:
        os.environ['AMENT_PREFIX_PATH'] = os.pathsep.join(filter(None, [sys.prefix, *prefixes]))


def data_root() -> Path:
    """The real RGB-T data: $UNIV_DATA, else ../shared/data beside the repository."""
    root = Path(os.environ.get('UNIV_DATA', REPO.parent / 'shared' / 'data'))
    if not root.is_dir():
        raise FileNotFoundError(
            f'real test data not found at {root}: set UNIV_DATA or place shared/ beside the repo')
    return root


@pytest.fixture(scope='session')
def data_dir() -> Path:
    return data_root()


@pytest.fixture(scope='session')
def toy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random UNIV model file (test/toy.py) shared by the node tests."""
    from toy import write_toy_model

    return write_toy_model(tmp_path_factory.mktemp('model') / 'toy.safetensors')


def ray_processes() -> list:
    """Live Ray processes started from this one (zombies are dead already)."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and 'ray' in ' '.join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue  # gone meanwhile
    return found


@pytest.fixture(scope='module')
def ray_runtime():
    """One local Ray runtime (2 CPUs) for the module; no Ray process may outlive it."""
    import psutil
    import ray

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('RAY_DISABLE_USAGE_STATS', '1')
        # Ray kills workers when the NODE's memory is > 95% used, whoever uses it; on a shared
        # CI machine that is often someone else's training job, so the check is off here.
        patch.setenv('RAY_memory_monitor_refresh_ms', '0')
        # Workers unpickle fleet_oracle's predictors: they need test/ on their path.
        patch.setenv('PYTHONPATH', os.pathsep.join(filter(None, [
            str(TEST_DIR), os.environ.get('PYTHONPATH')])))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level='WARNING')
        try:
            yield
        finally:
            procs = ray_processes()
            ray.shutdown()
            _, alive = psutil.wait_procs(procs, timeout=30)
            assert not alive, f'Ray processes left behind: {alive}'
