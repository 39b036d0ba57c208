"""`univ autolabel` with the real ONNX teachers of ../shared/models on a few real pairs."""

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from univ_core.autolabel.config import AutolabelConfig
from univ_core.models.weights import file_sha256
from univ_ros import cli

MSRS = ('00001D', '00003N')
ROADSCENE = ('FLIR_00006', 'FLIR_00018')


@pytest.fixture(scope='module')
def labelled(data_dir, tmp_path_factory):
    """2 MSRS pairs with their real boxes + 2 RoadScene pairs without labels, autolabelled."""
    base = tmp_path_factory.mktemp('autolabel')
    msrs, road = base / 'msrs_mini', base / 'roadscene'
    for name in MSRS:
        for sub in ('train/vi', 'train/ir'):
            (msrs / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy(data_dir / 'msrs_mini' / sub / f'{name}.png', msrs / sub)
        for sub in ('detection/visible/train', 'detection/infrared/train'):
            (msrs / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy(data_dir / 'msrs_mini' / sub / f'{name}.txt', msrs / sub)
    for name in ROADSCENE:
        for sub in ('vi', 'ir'):
            (road / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy(data_dir / 'roadscene' / sub / f'{name}.jpg', road / sub)
    out = base / 'labels'
    argv = ['autolabel', str(msrs), str(road), '--out', str(out), '--workers', '1', '--quiet']
    assert cli.main(argv) == 0  # two inputs: a fleet run, here in this process
    return data_dir, out


def yolo_rows(path):
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return [(int(r[0]), *map(float, r[1:])) for r in rows]


def test_real_boxes_win_over_the_teachers(labelled):
    data_dir, out = labelled
    for name in MSRS:
        for modality in ('visible', 'infrared'):
            real = data_dir / 'msrs_mini' / 'detection' / modality / 'train' / f'{name}.txt'
            got = out / 'msrs_mini' / 'labels' / modality / 'train' / f'{name}.txt'
            want, have = np.array(yolo_rows(real)), np.array(yolo_rows(got))
            assert have.shape == want.shape, (name, modality)
            assert np.allclose(have, want, atol=1e-5), (name, modality)


def test_unlabelled_pairs_get_yolo_boxes_and_masks_of_the_package_classes(labelled):
    data_dir, out = labelled
    summary = json.loads((out / 'roadscene' / 'provenance.json').read_text())
    classes = summary['classes']
    boxes = {'rgb': 0, 'thermal': 0}
    for name in ROADSCENE:
        for modality, key in (('visible', 'rgb'), ('infrared', 'thermal')):
            rows = yolo_rows(out / 'roadscene' / 'labels' / modality / f'{name}.txt')
            boxes[key] += len(rows)
            for cls, *xywh in rows:
                assert 0 <= cls < len(classes['detection'])
                assert all(0 <= v <= 1 for v in xywh) and xywh[2] > 0 and xywh[3] > 0
        mask = cv2.imread(str(out / 'roadscene' / 'masks' / f'{name}.png'), cv2.IMREAD_UNCHANGED)
        image = cv2.imread(str(data_dir / 'roadscene' / 'vi' / f'{name}.jpg'))
        assert mask.shape == image.shape[:2] and mask.dtype == np.uint8
        ids = set(np.unique(mask).tolist())
        assert ids <= set(range(len(classes['segmentation']))) | {255}
        assert len(ids - {255}) >= 2  # a daytime road scene: road, cars, sky, ...
    counts = summary['counts']
    assert {k: sum(v.values()) for k, v in counts.items()} == boxes  # provenance = files
    assert boxes['rgb'] > 0  # FLIR_00006 / 00018 are daytime street scenes with cars


def test_provenance_names_the_teachers_by_sha256(labelled):
    _, out = labelled
    summary = json.loads((out / 'msrs_mini' / 'provenance.json').read_text())
    config = AutolabelConfig()
    sha = {t['role']: t['sha256'] for t in summary['teachers']}
    assert sha['detector'] == file_sha256(config.detector_path())
    assert sha['segmenter'] == file_sha256(config.segmenter_path())
    assert summary['pairs'] == len(MSRS) and summary['real_label_pairs'] == len(MSRS)
    assert (out / 'msrs_mini' / 'summary.png').stat().st_size > 0


def test_a_bag_of_compressed_images_is_labelled_like_its_raw_twin(data_dir, tmp_path):
    """Topics named on the command line; PNG (lossless) gives the raw bag's labels exactly."""
    source = tmp_path / 'msrs'
    for sub in ('train/vi', 'train/ir'):
        (source / sub).mkdir(parents=True)
        shutil.copy(data_dir / 'msrs_mini' / sub / f'{MSRS[0]}.png', source / sub)
    labels = {}
    for transport in ('raw', 'png'):
        bag = tmp_path / f'{transport}_bag'
        assert cli.main(['bag-from-pairs', str(source), '--format', 'msrs', '--out', str(bag),
                         '--transport', transport]) == 0
        suffix = '' if transport == 'raw' else '/compressed'
        topics = ['--rgb-topic', f'/camera/rgb/image_raw{suffix}',
                  '--thermal-topic', f'/camera/thermal/image_raw{suffix}']
        out = tmp_path / f'{transport}_labels'
        assert cli.main(['autolabel', str(bag), '--out', str(out), '--quiet', *topics]) == 0
        files = sorted((out / bag.name / 'labels').rglob('*.txt'))
        labels[transport] = [(f.relative_to(out / bag.name), f.read_text()) for f in files]
    assert len(labels['raw']) == 2 and any(text for _, text in labels['raw'])
    assert labels['png'] == labels['raw']


def test_real_boxes_replace_only_the_classes_their_dataset_labels(data_dir, tmp_path):
    """LLVIP labels persons only: its persons are the real ones, the teacher's cars stay."""
    from univ_core.data.label_files import read_voc_boxes

    root = tmp_path / 'llvip'
    for sub in ('visible/train', 'infrared/train'):
        (root / sub).mkdir(parents=True)
        shutil.copy(data_dir / 'llvip' / sub / '010003.jpg', root / sub)
    (root / 'Annotations').mkdir()
    shutil.copy(data_dir / 'llvip' / 'Annotations' / '010003.xml', root / 'Annotations')
    out = tmp_path / 'labels'
    assert cli.main(['autolabel', str(root), '--out', str(out), '--quiet',
                     'box_threshold=0.2']) == 0
    height, width = cv2.imread(str(root / 'visible/train/010003.jpg')).shape[:2]
    real, _ = read_voc_boxes(data_dir / 'llvip' / 'Annotations' / '010003.xml', ['person'])
    rows = yolo_rows(out / 'llvip' / 'labels' / 'visible' / 'train' / '010003.txt')
    persons = np.array([r[1:] for r in rows if r[0] == 0])  # package class 0: person
    want = np.stack([(real[:, 0] + real[:, 2]) / 2 / width,
                     (real[:, 1] + real[:, 3]) / 2 / height,
                     (real[:, 2] - real[:, 0]) / width,
                     (real[:, 3] - real[:, 1]) / height], 1)
    assert np.allclose(persons, want, atol=1e-4)
    assert any(r[0] != 0 for r in rows)  # the teacher's bicycles / cars, kept


def test_pair_lists_hold_absolute_dataset_paths_and_survive_a_moved_output(data_dir, tmp_path,
                                                                          monkeypatch):
    """Labelled from relative paths, trained from another folder after the output moved."""
    from univ_core.data.labelled import open_autolabel

    source = tmp_path / 'work' / 'msrs'
    for sub in ('train/vi', 'train/ir'):
        (source / sub).mkdir(parents=True)
        shutil.copy(data_dir / 'msrs_mini' / sub / f'{MSRS[0]}.png', source / sub)
    monkeypatch.chdir(tmp_path / 'work')
    assert cli.main(['autolabel', 'msrs', '--out', 'labels', '--quiet']) == 0
    entries = json.loads(Path('labels/msrs/pairs.json').read_text())['pairs']
    assert all(Path(e['rgb']).is_absolute() and Path(e['rgb']).is_file() for e in entries)
    shutil.move('labels', tmp_path / 'moved')
    monkeypatch.chdir(tmp_path)
    data = open_autolabel(tmp_path / 'moved' / 'msrs')
    assert len(data) == 1 and data[0]['rgb'].shape[2] == 3


def test_a_truncated_bag_keeps_the_labels_of_the_pairs_before_the_damage(data_dir, tmp_path,
                                                                          capsys):
    bag = tmp_path / 'drive'
    assert cli.main(['bag-from-pairs', str(data_dir / 'msrs_mini'), '--format', 'msrs',
                     '--limit', '4', '--out', str(bag)]) == 0
    storage = bag / 'drive.mcap'
    os.truncate(storage, int(storage.stat().st_size * 0.7))  # a recorder that died
    out = tmp_path / 'labels'
    assert cli.main(['autolabel', str(bag), '--out', str(out), '--quiet']) == 1
    err = capsys.readouterr().err
    assert 'truncated or corrupt' in err and 'pairs read before the damage are in' in err
    provenance = json.loads((out / 'drive' / 'provenance.json').read_text())
    assert 'truncated' in provenance['damage'] and 0 < provenance['pairs'] < 4
    pairs = json.loads((out / 'drive' / 'pairs.json').read_text())['pairs']
    assert len(pairs) == provenance['pairs']
    assert all((out / 'drive' / p['rgb']).is_file() for p in pairs)
    fleet = tmp_path / 'fleet'  # a fleet run: a partial row, its pairs in the totals
    assert cli.main(['autolabel', str(bag), '--out', str(fleet), '--workers', '1',
                     '--quiet']) == 3
    summary = json.loads((fleet / 'summary.json').read_text())
    assert [r['status'] for r in summary['rows']] == ['partial']
    assert '0 ok, 1 damaged: labelled up to the damage, 0 failed' in \
        (fleet / 'summary.md').read_text()
    assert summary['totals']['pairs'] == provenance['pairs']


def test_training_reads_only_the_inputs_of_a_fleets_last_run(labelled, tmp_path):
    """A folder an earlier run wrote for an input since renamed is not read a second time."""
    from univ_core.data.labelled import open_autolabel

    _, out = labelled
    copy = tmp_path / 'labels'
    shutil.copytree(out, copy)
    shutil.copytree(copy / 'msrs_mini', copy / 'day1')  # e.g. `day1` before it became day1-<hash>
    pairs = json.loads((copy / 'summary.json').read_text())['totals']['pairs']
    assert len(open_autolabel(copy)) == pairs == len(MSRS) + len(ROADSCENE)
