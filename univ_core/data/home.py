"""Where the real RGB-T data lives: $UNIV_DATA, else ../shared/data beside the repository."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def data_home() -> Path:
    """The data folder (it may not exist: callers say how to get data when it does not)."""
    return Path(os.environ.get('UNIV_DATA', REPO.parent / 'shared' / 'data'))
