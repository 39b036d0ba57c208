"""Every command the README shows still parses (and what it names exists).

``univ ...`` lines are parsed by the real subcommand parsers (nothing runs); scripts and
launch files they name must exist. Commands that do run are run elsewhere: the two commands at
the top by CI itself, ``univ demo`` / ``univ replay`` / ``univ autolabel`` / ``univ finetune`` by
their tests with small settings.
"""

import re
import shlex
from pathlib import Path

import pytest

from univ_ros import cli

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """Shell commands of the README's ```bash blocks (continuations joined, comments cut)."""
    text = (REPO / 'README.md').read_text()
    commands = []
    for block in re.findall(r'```bash\n(.*?)```', text, re.S):
        for line in block.replace('\\\n', ' ').splitlines():
            line = line.split('  #')[0].split(' # ')[0].strip()
            for part in re.split(r'\s*&&\s*', line):
                if part and not part.startswith('#'):
                    commands.append(part)
    return commands


COMMANDS = readme_commands()
UNIV = [c for c in COMMANDS if re.match(r'(\.venv/bin/)?univ ', c)]


def test_the_readme_shows_the_main_commands():
    assert './setup.sh' in COMMANDS and '.venv/bin/univ demo' in COMMANDS
    assert '.venv/bin/python -m pytest -q' in COMMANDS
    assert len(UNIV) >= 10


@pytest.mark.parametrize('command', UNIV)
def test_univ_command_parses(command):
    argv = shlex.split(command)[1:]
    argv = [a for a in argv if a != '...']  # "and the other flags as above"
    assert argv[0] in cli.COMMANDS, command
    _, args = cli.parse(argv)
    for key in getattr(args, 'overrides', None) or []:
        assert re.fullmatch(r'[\w.]+=\S+', key), f'{command}: {key!r} is not key=value'


@pytest.mark.parametrize('command', [c for c in COMMANDS if '.py' in c.split()[0:2][-1]])
def test_named_scripts_exist(command):
    script = next(w for w in shlex.split(command) if w.endswith('.py') or w.endswith('run_all'))
    assert (REPO / script).is_file(), command
