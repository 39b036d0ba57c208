"""Test double of ``launch``: LaunchDescription records its entities."""

from . import actions, substitutions  # noqa: F401  (as the real package exposes them)


class LaunchDescription:
    """Records ``initial_entities`` (Humble signature)."""

    def __init__(self, initial_entities=None, *, deprecated_reason=None) -> None:
        self.entities = list(initial_entities or [])
        self.deprecated_reason = deprecated_reason
