"""setup.sh refuses to start a new .venv on a disk too full for it, saying how much it needs."""

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_setup_names_the_free_and_needed_disk_before_installing(tmp_path: Path) -> None:
    shutil.copy(REPO / 'setup.sh', tmp_path / 'setup.sh')  # a checkout without .venv
    result = subprocess.run(['bash', str(tmp_path / 'setup.sh')], capture_output=True, text=True,
                            env={**os.environ, 'UNIV_SETUP_NEED_GB': '1000000'},
                            timeout=60)
    assert result.returncode == 1
    assert f'GB free on the disk of {tmp_path}' in result.stderr
    assert 'needs ~1000000 GB' in result.stderr
    assert not (tmp_path / '.venv').exists()  # refused before anything was created
