"""Build vision_msgs (4.1.x message definitions) into the current venv with rosidl.

PyPI has the ROS 2 Jazzy rosidl/ament wheels but no vision_msgs. This script writes a plain
`rosidl_generate_interfaces` CMake project from `univ_ros/interfaces/vision_msgs/msg/*.msg`, points
the wheels' exported CMake files (which name the manylinux build interpreter under
/opt/python/cp311-cp311) at this interpreter, and installs into `sys.prefix`.
Run with the venv's python: `.venv/bin/python tools/build_vision_msgs.py`.
"""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

MSG_DIR = Path(__file__).resolve().parents[1] / 'univ_ros' / 'interfaces' / 'vision_msgs' / 'msg'
# The wheels were built in manylinux images; their exported paths name that interpreter.
WHEEL_PREFIX = re.compile(r'/opt/python/cp3\d+-cp3\d+')
WHEEL_SITE = re.compile(r'/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages')

CMAKE_LISTS = """cmake_minimum_required(VERSION 3.8)
project(vision_msgs)
find_package(ament_cmake REQUIRED)
find_package(rosidl_default_generators REQUIRED)
find_package(std_msgs REQUIRED)
find_package(geometry_msgs REQUIRED)
rosidl_generate_interfaces(${{PROJECT_NAME}}
  {msgs}
  DEPENDENCIES std_msgs geometry_msgs)
ament_export_dependencies(rosidl_default_runtime)
ament_package()
"""

PACKAGE_XML = """<?xml version="1.0"?>
<package format="3">
  <name>vision_msgs</name>
  <version>4.1.1</version>
  <description>vision_msgs message definitions, built for UNIV.</description>
  <maintainer email="univ@example.com">UNIV</maintainer>
  <license>Apache-2.0</license>
  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>
  <depend>std_msgs</depend>
  <depend>geometry_msgs</depend>
  <exec_depend>rosidl_default_runtime</exec_depend>
  <member_of_group>rosidl_interface_packages</member_of_group>
  <export><build_type>ament_cmake</build_type></export>
</package>
"""


def rewrite_wheel_paths(prefix: Path) -> int:
    """Point CMake/ament files that name the wheels' build interpreter at this venv.

    Returns:
        Number of files rewritten (0 on a second run: the rewrite is idempotent).
    """
    paths = sysconfig.get_paths()
    numpy_include = subprocess.run(
        [sys.executable, '-c', 'import numpy; print(numpy.get_include())'],
        check=True, capture_output=True, text=True).stdout.strip()
    replacements = [
        (re.compile(WHEEL_SITE.pattern + r'/numpy/_core/include'), numpy_include),
        (re.compile(WHEEL_PREFIX.pattern + r'/include/python3\.\d+'), paths['include']),
        (WHEEL_SITE, paths['purelib']),
        (WHEEL_PREFIX, str(prefix)),
    ]
    count = 0
    for path in (prefix / 'share').rglob('*'):
        if not path.is_file() or path.stat().st_size > 1_000_000:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        if not WHEEL_PREFIX.search(text):
            continue
        for pattern, new in replacements:
            text = pattern.sub(lambda _match, new=new: new, text)
        path.write_text(text)
        count += 1
    return count


def build(prefix: Path) -> None:
    """Generate, build and install vision_msgs into `prefix`."""
    msgs = sorted(MSG_DIR.glob('*.msg'))
    if len(msgs) != 9:
        raise FileNotFoundError(f'expected 9 .msg files in {MSG_DIR}, found {len(msgs)}')
    with tempfile.TemporaryDirectory(prefix='vision_msgs_') as tmp:
        src, build_dir = Path(tmp) / 'src', Path(tmp) / 'build'
        (src / 'msg').mkdir(parents=True)
        for msg in msgs:
            shutil.copy(msg, src / 'msg' / msg.name)
        (src / 'CMakeLists.txt').write_text(
            CMAKE_LISTS.format(msgs='\n  '.join(f'msg/{m.name}' for m in msgs)))
        (src / 'package.xml').write_text(PACKAGE_XML)
        cmake = [
            'cmake', '-S', str(src), '-B', str(build_dir), '-DBUILD_TESTING=OFF',
            f'-DCMAKE_PREFIX_PATH={prefix}', f'-DCMAKE_INSTALL_PREFIX={prefix}',
            f'-DPython3_EXECUTABLE={sys.executable}', '-DCMAKE_BUILD_TYPE=Release',
            '-DPython3_FIND_STRATEGY=LOCATION',
        ]
        env = {**os.environ, 'AMENT_PREFIX_PATH': str(prefix)}
        subprocess.run(cmake, check=True, env=env)
        subprocess.run(['cmake', '--build', str(build_dir), '-j2'], check=True, env=env)
        subprocess.run(['cmake', '--install', str(build_dir)], check=True, env=env)


def main() -> int:
    """Rewrite the wheels' paths, then build and install vision_msgs into this venv."""
    prefix = Path(sys.prefix)
    if prefix == Path(sys.base_prefix):
        print('build_vision_msgs: run it with the venv python, not the system one',
              file=sys.stderr)
        return 2
    print(f'build_vision_msgs: rewrote {rewrite_wheel_paths(prefix)} wheel CMake files')
    build(prefix)
    return 0


if __name__ == '__main__':
    sys.exit(main())
