"""The node's parameter table: defaults from PredictorConfig, declaration, --help, YAML file."""

import contextlib
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import rclpy
import torch
import yaml
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import ReliabilityPolicy
from toy import write_toy_model

from univ_core.inference import PredictorConfig, ThermalNorm, load_predictor
from univ_ros.params import (
    CLASS_SPECS,
    PARAM_SPECS,
    declare_node_params,
    describe,
    input_qos,
    predictor_config,
)

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / 'config' / 'perception.yaml'


@contextlib.contextmanager
def declared(**overrides):
    """A real rclpy node with ``overrides`` as parameter overrides."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node('univ_params_test', context=context, parameter_overrides=[
        Parameter(name, value=value) for name, value in overrides.items()])
    try:
        yield node
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_mirrored_defaults_are_predictor_config_defaults() -> None:
    config, norm = PredictorConfig(), ThermalNorm()
    fields = {f.name for f in dataclasses.fields(PredictorConfig)}
    mirrored = [spec for spec in PARAM_SPECS if spec.predictor]
    assert {'model', 'device', 'precision', 'num_threads', 'score_threshold'} <= {
        s.name for s in mirrored}
    for spec in mirrored:
        if spec.name.startswith('thermal_norm.'):
            expected = getattr(norm, spec.name.split('.', 1)[1])
        else:
            assert spec.name in fields, spec.name
            expected = getattr(config, spec.name)
        if expected is None:  # unset optional parameter
            assert isinstance(spec.default, Parameter.Type), spec.name
        else:  # a tuple field is a ROS array (list)
            expected = list(expected) if isinstance(expected, tuple) else expected
            assert spec.default == expected and type(spec.default) is type(expected), spec.name


def test_declared_defaults_give_the_default_predictor_config() -> None:
    with declared() as node:
        params = declare_node_params(node)
    config = predictor_config(params)
    default = PredictorConfig()
    for spec in PARAM_SPECS:
        if spec.predictor and not spec.name.startswith('thermal_norm.'):
            assert getattr(config, spec.name) == getattr(default, spec.name), spec.name
    assert config.thermal_norm == default.thermal_norm
    assert params.streams == ('rgb', 'thermal') and params.sync_slop == 0.0
    assert input_qos(params).reliability == ReliabilityPolicy.BEST_EFFORT


def test_declared_values_reach_the_predictor_config() -> None:
    with declared(mode='thermal', num_threads=1, input_size=[224, 280],
                  **{'thermal_norm.mode': 'fixed', 'thermal_norm.high': 30000.0,
                     'qos.reliability': 'reliable', 'qos.depth': 2}, fusion_rule='noisy_or',
                  fusion_weights=[1.0, 0.5], fusion_iou=0.4) as node:
        params = declare_node_params(node)
    config = predictor_config(params)
    assert params.streams == ('thermal',) and config.num_threads == 1
    assert config.input_size == (224, 280)
    assert (config.fusion_rule, config.fusion_weights, config.fusion_iou) == (
        'noisy_or', (1.0, 0.5), 0.4)
    assert config.thermal_norm == ThermalNorm(mode='fixed', high=30000.0)
    assert input_qos(params).reliability == ReliabilityPolicy.RELIABLE
    assert input_qos(params).depth == 2


@pytest.mark.parametrize('overrides, message', [
    ({'mode': 'stereo'}, "parameter mode: expected one of .*'fused'.*got 'stereo'"),
    ({'qos.reliability': 'best'}, 'parameter qos.reliability'),
    ({'class_id': 'label'}, 'parameter class_id'),
    ({'rgb_transport': 'theora'}, 'parameter rgb_transport'),
    ({'input_size': [1, 2, 3]}, r'parameter input_size: expected \[H, W\]'),
    ({'homography': [1.0] * 8}, 'parameter homography: expected 9 values'),
    ({'fusion_weights': [0.5]}, r'parameter fusion_weights: expected \[rgb, thermal\]'),
])
def test_bad_values_name_the_parameter(overrides, message) -> None:
    with declared(**overrides) as node, pytest.raises(ValueError, match=message):
        declare_node_params(node)


def test_num_threads_sets_torch_intra_op_threads(tmp_path) -> None:
    model = write_toy_model(tmp_path / 'toy.safetensors')
    before = torch.get_num_threads()
    try:
        load_predictor(PredictorConfig(model=str(model), device='cpu', num_threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_every_parameter_described_with_range_where_bounded() -> None:
    for spec in PARAM_SPECS + CLASS_SPECS:
        descriptor = describe(spec)
        assert len(descriptor.description) > 20 and descriptor.read_only == spec.read_only
        ranges = [*descriptor.floating_point_range, *descriptor.integer_range]
        assert len(ranges) == (spec.bounds is not None), spec.name
        assert bool(descriptor.additional_constraints) == bool(spec.choices), spec.name
    assert {s.name for s in PARAM_SPECS if not s.read_only} == {
        'stale_after', 'score_threshold', 'nms_iou', 'publish_color', 'publish_debug_image'}


@pytest.mark.parametrize('executable', ['perception_node', 'perception_lifecycle_node'])
def test_help_lists_every_parameter_without_importing_torch(executable) -> None:
    module = {'perception_node': 'univ_ros.perception_node',
              'perception_lifecycle_node': 'univ_ros.lifecycle_node'}[executable]
    run = subprocess.run(
        [sys.executable, '-c', f'import sys; from {module} import main; code = main(["--help"]); '
         "print('torch imported:', 'torch' in sys.modules); sys.exit(code)"],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f'usage: {executable}')
    assert 'torch imported: False' in run.stdout
    assert '<Type.' not in run.stdout
    for spec in PARAM_SPECS + CLASS_SPECS:
        line = next(li for li in run.stdout.splitlines() if li.startswith(f'  {spec.name} ('))
        if isinstance(spec.default, Parameter.Type):
            assert '(unset)' in line, line
        else:
            assert f'(default {spec.default!r})' in line, line


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


def test_the_start_line_says_which_precision_runs() -> None:
    # precision auto resolves per device and CPU (bf16 / int8 where native): the log says which
    from types import SimpleNamespace

    from univ_ros.perception_node import start_line

    with declared() as node:
        params = declare_node_params(node)
    predictor = SimpleNamespace(input_size=(336, 448), device='cpu', precision='bf16',
                                seg_classes=['road'], det_classes=['person', 'car'])
    line = start_line(params, predictor)
    assert 'precision bf16 (auto), input 448x336' in line
    assert '1 segmentation / 2 detection' in line
    del predictor.precision  # a stand-in without one (test stubs): the parameter as given
    assert 'precision auto, input' in start_line(params, predictor)

