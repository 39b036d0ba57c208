"""`univ demo` (the README's main job) on the shipped default model: what it prints is what the
model's sidecar measured, it publishes masks and detections, and boxes are not multiplied."""

import contextlib
import io
import json
import re

import pytest

from univ_core.data.evaluation_pairs import MSRS_TEST
from univ_core.models.model_file import DEFAULT_MODEL
from univ_ros import cli

SIDECAR = json.loads(DEFAULT_MODEL.with_suffix('.json').read_text())


@pytest.fixture(scope='module')
def demo(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp('demo') / 'univ_demo'
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main(['demo', '--out', str(out), '--quiet']) == 0
    return printed.getvalue(), json.loads((out / 'replay' / 'report.json').read_text())


def test_demo_replays_the_held_out_pairs_and_prints_the_sidecars_map(demo):
    printed, report = demo
    assert f'replayed {len(MSRS_TEST)} held-out evaluation pairs' in printed
    for mode, key in (('rgb', 'rgb'), ('thermal', 'ir'), ('fused', 'fused')):
        line = re.search(rf'^\s+{mode}\s+([0-9.]+)$', printed, re.M)
        assert line, f'no {mode} mAP50 line in:\n{printed}'
        # univ replay == univ eval (the benchmark) on the same model and pairs
        assert float(line.group(1)) == pytest.approx(SIDECAR['metrics'][f'msrs_{key}_map50'],
                                                     abs=5e-4), mode


def test_demo_publishes_masks_and_about_one_box_per_labelled_object(demo):
    _, report = demo
    processed = report['pairs']['processed']
    published = report['published']
    assert processed == len(MSRS_TEST)
    assert published['messages']['/univ_perception/segmentation'] == processed
    assert published['messages']['/univ_perception/detections'] == processed
    labelled = SIDECAR['benchmark']['detection']['msrs']['fused']['objects_per_image']
    assert published['boxes'] / processed <= 2 * labelled
