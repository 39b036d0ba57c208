"""launch/perception.launch.py against test doubles of launch/launch_ros, and the config file.

``launch`` and ``launch_ros`` are not installable here: ``test/launch_double`` records what the
launch file constructs. The real ament index lookup runs against a temporary install prefix
laid out from setup.py's ``data_files``.
"""

import importlib.util
import re
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import setuptools
import yaml

from univ_ros.params import CLASS_SPECS, PARAM_SPECS

REPO = Path(__file__).resolve().parents[1]
DOUBLE = Path(__file__).with_name('launch_double')
CONFIG = REPO / 'config' / 'perception.yaml'
LAUNCH_ARGS = {
    'params_file',
    'namespace',
    'rgb_topic',
    'thermal_topic',
    'device',
    'model',
    'use_sim_time',
}


def setup_kwargs(monkeypatch: pytest.MonkeyPatch) -> dict:
    """The keyword arguments setup.py passes to setuptools.setup (run from the repo root)."""
    captured = {}
    monkeypatch.setattr(setuptools, 'setup', lambda **kwargs: captured.update(kwargs))
    monkeypatch.chdir(REPO)
    runpy.run_path(str(REPO / 'setup.py'))
    return captured


def install_data_files(kwargs: dict, prefix: Path) -> None:
    """Copy setup.py's data_files under ``prefix`` as `pip install` / colcon would."""
    for destination, files in kwargs['data_files']:
        (prefix / destination).mkdir(parents=True, exist_ok=True)
        for name in files:
            shutil.copy(REPO / name, prefix / destination)


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[dict, object]:
    """(setup kwargs, LaunchDescription) with the doubles first on sys.path."""
    kwargs = setup_kwargs(monkeypatch)
    install_data_files(kwargs, tmp_path)
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(tmp_path))
    monkeypatch.syspath_prepend(str(DOUBLE))
    for name in list(sys.modules):  # a real launch package must not shadow the doubles
        if name.split('.')[0] in ('launch', 'launch_ros'):
            monkeypatch.delitem(sys.modules, name)
    spec = importlib.util.spec_from_file_location(
        'perception_launch', REPO / 'launch' / 'perception.launch.py'
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert Path(sys.modules['launch'].__file__).is_relative_to(DOUBLE)
    return kwargs, module.generate_launch_description()


def split(description: object) -> tuple[dict, object]:
    from launch.actions import DeclareLaunchArgument
    from launch_ros.actions import Node

    arguments = {e.name: e for e in description.entities if isinstance(e, DeclareLaunchArgument)}
    (node,) = [e for e in description.entities if isinstance(e, Node)]
    assert len(description.entities) == len(arguments) + 1
    return arguments, node


def config_parameters() -> dict:
    """config/perception.yaml's parameters, nested keys joined with '.'."""
    document = yaml.safe_load(CONFIG.read_text())
    assert list(document) == ['/**'] and list(document['/**']) == ['ros__parameters']

    def flatten(tree: dict, prefix: str = '') -> dict:
        flat = {}
        for key, value in tree.items():
            if isinstance(value, dict):
                flat.update(flatten(value, f'{prefix}{key}.'))
            else:
                flat[f'{prefix}{key}'] = value
        return flat

    return flatten(document['/**']['ros__parameters'])


def test_node_action_matches_setup_py(installed: tuple) -> None:
    kwargs, description = installed
    from launch.substitutions import LaunchConfiguration

    _, node = split(description)
    assert node.package == kwargs['name'] == 'univ_ros'
    scripts = dict(
        line.replace(' ', '').split('=') for line in kwargs['entry_points']['console_scripts']
    )
    assert scripts[node.executable] == 'univ_ros.perception_node:main'
    assert node.name == 'univ_perception'
    assert "NODE_NAME = 'univ_perception'" in (REPO / 'univ_ros/perception_node.py').read_text()
    assert node.namespace == LaunchConfiguration('namespace')
    assert node.kwargs == {'output': 'screen', 'emulate_tty': True}


def test_params_file_defaults_to_installed_config(installed: tuple) -> None:
    _, description = installed
    from launch.substitutions import LaunchConfiguration

    arguments, node = split(description)
    default = Path(arguments['params_file'].default_value)
    assert default.parts[-4:] == ('share', 'univ_ros', 'config', 'perception.yaml')
    assert default.read_text() == CONFIG.read_text()  # installed by setup.py's data_files
    assert node.parameters[0] == LaunchConfiguration('params_file')
    overrides = node.parameters[1]
    assert set(overrides) == {'device', 'model', 'use_sim_time'}
    for name, value in overrides.items():
        assert value.value == LaunchConfiguration(name)
    assert overrides['use_sim_time'].value_type is bool
    assert overrides['device'].value_type is str and overrides['model'].value_type is str
    assert arguments['device'].default_value == config_parameters()['device']
    assert arguments['model'].default_value == config_parameters()['model']


def test_remappings_match_config_topics(installed: tuple) -> None:
    _, description = installed
    from launch.substitutions import LaunchConfiguration

    arguments, node = split(description)
    config = config_parameters()
    assert node.remappings == [
        (config['rgb_topic'], LaunchConfiguration('rgb_topic')),
        (config['thermal_topic'], LaunchConfiguration('thermal_topic')),
    ]
    assert arguments['rgb_topic'].default_value == config['rgb_topic']
    assert arguments['thermal_topic'].default_value == config['thermal_topic']


def test_every_launch_argument_declared_with_description(installed: tuple) -> None:
    _, description = installed
    from launch.substitutions import LaunchConfiguration

    arguments, node = split(description)
    assert set(arguments) == LAUNCH_ARGS
    assert all(len(a.description) > 15 for a in arguments.values())
    used = [
        node.namespace,
        node.parameters[0],
        *(v.value for v in node.parameters[1].values()),
        *(target for _, target in node.remappings),
    ]
    assert all(isinstance(u, LaunchConfiguration) for u in used)
    assert {u.variable_name for u in used} == LAUNCH_ARGS


def test_config_documents_every_parameter_with_its_default() -> None:
    config = config_parameters()
    specs = {spec.name: spec for spec in PARAM_SPECS + CLASS_SPECS}
    assert set(config) <= set(specs), f'unknown keys {set(config) - set(specs)}'
    text = CONFIG.read_text()
    for name, spec in specs.items():
        if name in config:
            expected = (
                pytest.approx(spec.default) if isinstance(spec.default, float) else (spec.default)
            )
            assert config[name] == expected, name
        else:  # an optional parameter: shown commented out, with a value of the right shape
            leaf = name.split('.')[-1]
            match = re.search(rf'^\s*# {leaf}: (\[.*\])$', text, re.MULTILINE)
            assert match, f'{name} is neither set nor shown commented out'
            assert isinstance(yaml.safe_load(match.group(1)), list)


def test_config_comments_every_key() -> None:
    lines = [line.strip() for line in CONFIG.read_text().splitlines() if line.strip()]
    keys = [i for i, line in enumerate(lines) if re.match(r'^[a-z_]+: \S', line)]
    assert len(keys) == len(config_parameters())
    for i in keys:
        assert lines[i - 1].startswith('#'), f'no comment above {lines[i]!r}'
