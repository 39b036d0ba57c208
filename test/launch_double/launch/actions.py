"""Test double of ``launch.actions``."""


class DeclareLaunchArgument:
    """Records a declared launch argument (Humble signature)."""

    def __init__(self, name, *, default_value=None, description=None, choices=None) -> None:
        self.name = name
        self.default_value = default_value
        self.description = description
        self.choices = choices
