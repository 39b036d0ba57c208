"""Where the real RGB-T data and the package's config files live.

Data: $UNIV_DATA, else ../shared/data beside the repository.
"""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def data_home() -> Path:
    """The data folder (it may not exist: callers say how to get data when it does not)."""
    return Path(os.environ.get('UNIV_DATA', REPO.parent / 'shared' / 'data'))


def config_file(name: str) -> Path:
    """``config/<name>`` of the repository, else of the installed package.

    colcon and pip install the folder as ``share/univ_ros/config``; there is no repository there.
    """
    path = REPO / 'config' / name
    if path.is_file():
        return path
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory('univ_ros')) / 'config' / name
    except (ImportError, LookupError, OSError):  # no ROS, or not on AMENT_PREFIX_PATH: pip
        return Path(sys.prefix) / 'share' / 'univ_ros' / 'config' / name
