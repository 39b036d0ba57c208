"""Test double of ``launch_ros.parameter_descriptions``."""


class ParameterValue:
    """Records a typed parameter value (Humble signature)."""

    def __init__(self, value, *, value_type=None) -> None:
        self.value = value
        self.value_type = value_type
