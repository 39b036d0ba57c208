"""Test double of ``launch.substitutions``."""


class LaunchConfiguration:
    """Records the launch argument it reads (Humble signature); equal by variable name."""

    def __init__(self, variable_name, *, default=None) -> None:
        self.variable_name = variable_name
        self.default = default

    def __eq__(self, other) -> bool:
        return isinstance(other, LaunchConfiguration) and (
            (self.variable_name, self.default) == (other.variable_name, other.default)
        )

    def __hash__(self) -> int:
        return hash(self.variable_name)

    def __repr__(self) -> str:
        return f'LaunchConfiguration({self.variable_name!r})'
