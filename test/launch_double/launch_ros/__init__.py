"""Test double of ``launch_ros``."""

from . import actions, parameter_descriptions  # noqa: F401
