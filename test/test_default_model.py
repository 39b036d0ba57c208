"""The shipped default model on held-out real labels: floors, fusion, provenance, README.

Every number here is measured on the evaluation pairs (univ_core/data/evaluation_pairs.py),
which the default model never trained on, in fp32 (CPU-independent). A worse model, a fusion
that hurts, a model left stale by a new adapter or config, or a README that prints other
numbers than the model's sidecar fails here.
"""

import json
import re
from pathlib import Path

import pytest
from coco_reference import coco_ap50

from univ_core.autolabel.config import AutolabelConfig
from univ_core.eval.benchmark import benchmark, detection_sets, headline
from univ_core.inference import PredictorConfig, load_predictor
from univ_core.models.model_file import DEFAULT_MODEL, read_spec
from univ_core.models.univ_weights import UNIV_ADAPTER
from univ_core.models.weights import file_sha256
from univ_core.train import default_model
from univ_core.train.config import from_dict, load_config, to_dict
from univ_core.train.default_model import DefaultModelConfig

REPO = Path(__file__).resolve().parents[1]
SIDECAR = json.loads(DEFAULT_MODEL.with_suffix('.json').read_text())
# a little below what the shipped model measures (its sidecar): a regression fails CI
FLOORS = {
    'msrs_rgb_map50': 0.32,  # measured 0.353
    'msrs_ir_map50': 0.23,  # 0.259
    'llvip_ir_map50': 0.82,  # LLVIP labels persons only: = thermal person AP50; 0.871
    'roadscene_day_rgb_miou': 0.39,  # 0.418
    'roadscene_day_ir_miou': 0.37,  # 0.402
    'roadscene_day_fused_miou': 0.43,  # 0.457
}


@pytest.fixture(scope='module')
def predictor():
    return load_predictor(PredictorConfig(device='cpu', precision='fp32'))  # '' = shipped


@pytest.fixture(scope='module')
def results(predictor, data_dir):
    return benchmark(predictor, data_dir)


def test_the_shipped_files_are_the_ones_their_sidecars_describe():
    assert DEFAULT_MODEL.stat().st_size <= 10e6  # fp16 heads (+ LoRA delta)
    assert file_sha256(DEFAULT_MODEL) == SIDECAR['sha256']
    spec = read_spec(DEFAULT_MODEL)
    assert spec.seg_classes and spec.det_classes and (spec.lora or spec.backbone)  # compact
    adapter = json.loads(UNIV_ADAPTER.with_suffix('.json').read_text())
    assert file_sha256(UNIV_ADAPTER) == adapter['sha256']


def test_the_default_model_is_not_stale():
    """Trained with the committed config, on the shipped adapter if it uses one.

    The sidecar's settings are read back through the config class, so a setting added later,
    whose default keeps the old behaviour, leaves the shipped model current.
    """
    config = load_config(DefaultModelConfig, REPO / 'config' / 'default_model.yaml')
    trained = from_dict(DefaultModelConfig, SIDECAR['config'], 'sidecar config')
    want, got = (json.loads(json.dumps(to_dict(c))) for c in (config, trained))
    for settings in (want, got):  # set by train-default itself: the labels and run folders
        for key in ('data', 'out_dir'):
            settings['finetune'].pop(key)
        table = Path(settings['autolabel']['classes'])  # absolute: compare within the repo
        settings['autolabel']['classes'] = f'{table.parent.name}/{table.name}'
    assert got == want, 'stale: run univ train-default'
    if config.finetune.backbone == 'univ':
        assert SIDECAR['backbone_adapter_sha256'] == file_sha256(UNIV_ADAPTER)
    else:
        assert read_spec(DEFAULT_MODEL).backbone == config.finetune.backbone


def test_held_out_accuracy_is_what_the_sidecar_says(results):
    measured = headline(results)
    assert measured == pytest.approx(SIDECAR['metrics'], abs=2e-3)


def test_held_out_accuracy_stays_above_the_floors(results):
    got = headline(results)
    assert got['llvip_ir_map50'] == pytest.approx(
        results['detection']['llvip']['ir']['ap50']['person'])
    low = {k: (got[k], floor) for k, floor in FLOORS.items() if not got[k] >= floor}
    assert not low, f'below the floor: {low}'


def test_the_common_truth_is_harder_than_a_cameras_own_boxes(results):
    """RGB misses the thermal-only objects (night pedestrians) that the union of boxes holds."""
    det = results['detection']['msrs']
    assert det['vs_either']['rgb']['map50'] < det['rgb']['map50']


def test_fused_scores_at_least_the_better_camera_on_the_common_truth(results):
    """msrs_mini: every camera choice against the objects either camera's boxes hold."""
    det = results['detection']['msrs']
    single = {m: det['vs_either'][m]['map50'] for m in ('rgb', 'ir')}
    assert det['fused']['map50'] >= max(single.values()), single


def test_fused_segmentation_beats_either_camera_alone(results):
    """RoadScene day frames: the averaged class probabilities of both images vs each image."""
    seg = results['segmentation']
    assert seg['fused']['miou'] > max(seg['rgb']['miou'], seg['ir']['miou'])


@pytest.mark.xfail(strict=True, reason='issue 11, open: on LLVIP (night, one box list for both '
                   'cameras) fused person AP50 is below thermal alone (0.817 vs 0.871); strict: '
                   'passing fails this test, so the marker goes when fusion is fixed there')
def test_fused_scores_at_least_thermal_on_llvip_night_pairs(results):
    det = results['detection']['llvip']
    assert det['fused']['map50'] >= max(det['rgb']['map50'], det['ir']['map50'])


def test_map_equals_pycocotools_on_the_same_boxes(results, predictor, data_dir):
    pairs = detection_sets(data_dir)['msrs']
    for modality in ('rgb', 'ir'):
        assert results['detection']['msrs'][modality]['map50'] == pytest.approx(
            coco_ap50(predictor, pairs, modality), abs=1e-6)


def test_the_readme_prints_the_sidecars_numbers():
    text = (REPO / 'README.md').read_text()
    section = text[text.index('## The default model'):]
    section = section[:section.index('\n## ', 4)]
    for key, value in SIDECAR['metrics'].items():
        row = re.search(rf'`{key}`[^\n]*?\| ([0-9.]+) \|', section)
        assert row, f'README "The default model" has no row for {key}'
        assert float(row.group(1)) == pytest.approx(value, abs=5e-4), key


ALIGNMENT_ROWS = ('teacher_within_one', 'teacher_scene_dependent', 'own_within_one',
                  'own_scene_dependent', 'own_cos_gap', 'rgb_raw_cosine', 'rgb_cka',
                  'rgb_within_one', 'ir_rgb_cka')  # the README table's rows, in order


def test_the_readme_prints_the_shipped_adapters_numbers():
    """'Pre-training': the shipped column of the alignment table and the shipped downstream row."""
    metrics = json.loads(UNIV_ADAPTER.with_suffix('.json').read_text())['metrics']
    text = (REPO / 'README.md').read_text()
    lines = text[text.index('| metric (12 held-out pairs, 336 x 448)'):].splitlines()
    cells = [[c.strip() for c in line.strip('|').split('|')] for line in lines]
    column = next(i for i, c in enumerate(cells[0]) if '(shipped)' in c)
    rows = cells[2:2 + len(ALIGNMENT_ROWS)]
    for key, row in zip(ALIGNMENT_ROWS, rows, strict=True):
        univ, teacher = (metrics['alignment'][m][key] for m in ('univ', 'teacher'))
        assert float(row[column]) == pytest.approx(univ, abs=5e-4), key
        assert float(row[1]) == pytest.approx(teacher, abs=5e-4), key
    down = metrics['downstream']
    row = next(line for line in text.splitlines() if line.startswith('| **`') and
               '(shipped)**' in line)
    shown = [float(x) for x in re.findall(r'([0-9.]+) ± ([0-9.]+)', row) for x in x]
    want = [down['univ'][k][s] for k in ('rgb_map50', 'ir_map50', 'llvip_ir_person_ap50')
            for s in ('mean', 'std')]
    assert shown == pytest.approx(want, abs=5e-4)
    ratios = re.findall(r'\((\d+) %\)|\(([0-9.]+)x\)', row)
    assert float(ratios[0][0]) == pytest.approx(100 * down['rgb_kept'], abs=0.5)
    assert float(ratios[1][1]) == pytest.approx(down['thermal_ratio_of_means'], abs=5e-3)
    assert float(ratios[2][1]) == pytest.approx(down['llvip_thermal_ratio_of_means'], abs=5e-3)


def test_the_labels_key_covers_the_labelling_code(tmp_path, monkeypatch):
    """A cached autolabel folder made by other merging code is not reused (its key changes)."""
    assert REPO / 'univ_core' / 'inference' / 'box_fusion.py' in default_model.LABEL_CODE
    code = tmp_path / 'merge.py'
    code.write_text('IOU = 0.55\n')
    monkeypatch.setattr(default_model, 'LABEL_CODE', (code,))
    before = default_model.label_code_sha256()
    code.write_text('IOU = 0.5\n')
    assert default_model.label_code_sha256() != before


def test_the_labels_key_covers_the_class_tables_mapping_not_its_comments(tmp_path):
    """A class table that maps teacher classes otherwise makes other labels: a new key."""
    shipped = REPO / 'config' / 'autolabel.yaml'
    listing = {'msrs_mini': ['00001D']}
    commented, remapped = tmp_path / 'commented.yaml', tmp_path / 'remapped.yaml'
    commented.write_text('# a note\n' + shipped.read_text())
    text = shipped.read_text()
    assert '    motorcycle: bicycle\n' in text
    remapped.write_text(text.replace('    motorcycle: bicycle\n', ''))
    key = {p.name: default_model.labels_key(AutolabelConfig(classes=str(p)), listing)
           for p in (shipped, commented, remapped)}
    assert key['commented.yaml'] == key['autolabel.yaml'] != key['remapped.yaml']


@pytest.mark.parametrize('override', ['finetune.out_dir=/tmp/elsewhere',
                                      'finetune.data.holdout=8'])
def test_train_default_refuses_the_settings_it_sets_itself(override, tmp_path, capsys):
    # both were overwritten by train-default (its labels folder, work_dir/finetune-<hash>)
    from univ_ros import cli

    assert cli.main(['train-default', '--out', str(tmp_path / 'm.safetensors'), override]) == 1
    assert 'train-default sets them itself' in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
