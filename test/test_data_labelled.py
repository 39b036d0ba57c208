"""Labelled datasets in native layouts, and joint geometry keeping boxes/masks on both images."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from univ_core.data.labelled import MFNET_CLASSES, open_labelled_dataset
from univ_core.data.transforms import PairedRandomResizedCrop
from univ_core.train.views import apply_window

H, W = 40, 56


def _rgb(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _save(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)  # PIL writes RGB / L / RGBA in PNG channel order
    return path


def _voc(path: Path, objects: list[tuple[str, tuple[int, int, int, int]]]) -> Path:
    body = ''.join(f'<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>'
                   f'<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>'
                   for name, b in objects)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'<annotation><size><width>{W}</width><height>{H}</height></size>{body}'
                    '</annotation>')
    return path


# ---------------------------------------------------------------- real data: MSRS detection


def test_msrs_mini_detection_loads_per_modality_boxes(data_dir):
    ds = open_labelled_dataset(data_dir / 'msrs_mini', 'msrs_det', 'train')
    assert len(ds) == 34
    assert ds.class_names == ['person', 'bicycle', 'car']
    differs = 0
    for index in range(len(ds)):
        s = ds[index]
        assert s['rgb'].shape == (480, 640, 3) and s['thermal'].shape == (480, 640)
        assert s['mask'] is None
        for key in ('rgb', 'ir'):
            boxes, labels = s[f'boxes_{key}'], s[f'labels_{key}']
            assert boxes.dtype == np.float32 and labels.dtype == np.int64
            assert len(boxes) == len(labels) and set(labels.tolist()) <= {0, 1, 2}
            assert (boxes[:, [0, 1]] >= 0).all() and (boxes[:, 2] <= 640).all()
            assert (boxes[:, 3] <= 480).all() and (boxes[:, 2:] > boxes[:, :2]).all()
        differs += len(s['boxes_rgb']) != len(s['boxes_ir'])
    assert differs > 0  # objects seen in one modality only are labelled only there
    first = ds[0]  # 00001D: visible line 1 "0 0.360938 0.566667 0.175000 0.575000"
    assert first['name'] == '00001D'
    np.testing.assert_allclose(first['boxes_rgb'][0], [175.0, 134.0, 287.0, 410.0], atol=0.01)
    assert len(first['boxes_rgb']) == 5 and len(first['boxes_ir']) == 4


def _msrs_det(root: Path, rgb_line: str, ir_line: str = '0 0.5 0.5 0.2 0.2') -> Path:
    _save(root / 'train' / 'vi' / 'a.png', _rgb())
    _save(root / 'train' / 'ir' / 'a.png', _rgb(1)[..., 0])
    for folder, line in (('visible', rgb_line), ('infrared', ir_line)):
        txt = root / 'detection' / folder / 'train' / 'a.txt'
        txt.parent.mkdir(parents=True, exist_ok=True)
        txt.write_text(line)
    return root


def test_yolo_class_out_of_range_names_file_and_line(tmp_path):
    root = _msrs_det(tmp_path, '0 0.5 0.5 0.1 0.1\n3 0.5 0.5 0.1 0.1\n')
    with pytest.raises(ValueError, match=r'visible/train/a\.txt:2: class id 3'):
        open_labelled_dataset(root, 'msrs_det', 'train')[0]


def test_missing_label_file_and_size_mismatch_are_errors(tmp_path):
    root = _msrs_det(tmp_path, '0 0.5 0.5 0.1 0.1')
    (root / 'detection' / 'infrared' / 'train' / 'a.txt').unlink()
    with pytest.raises(FileNotFoundError, match='infrared/train/a.txt'):
        open_labelled_dataset(root, 'msrs_det', 'train')
    root = _msrs_det(tmp_path / 'other', '0 0.5 0.5 0.1 0.1')
    _save(root / 'train' / 'ir' / 'a.png', np.zeros((H + 2, W), np.uint8))
    with pytest.raises(ValueError, match='a.png'):
        open_labelled_dataset(root, 'msrs_det', 'train')[0]


def test_unknown_format_and_corrupt_image_are_errors(tmp_path):
    with pytest.raises(ValueError, match='unknown dataset format'):
        open_labelled_dataset(tmp_path, 'coco', 'train')
    root = _msrs_det(tmp_path, '')
    (root / 'train' / 'vi' / 'a.png').write_bytes(b'not a png')
    with pytest.raises(ValueError, match=r'vi/a\.png'):
        open_labelled_dataset(root, 'msrs_det', 'train')[0]


# ---------------------------------------------------------------- segmentation layouts


def _mask() -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[5:15, 10:30] = 2  # person
    mask[20:30, 30:50] = 8  # bump
    mask[0, 0] = 255  # ignored pixel
    return mask


def test_msrs_segmentation_layout(tmp_path):
    for split in ('train', 'test'):
        _save(tmp_path / split / 'vi' / '00001D.png', _rgb())
        _save(tmp_path / split / 'ir' / '00001D.png', _rgb(1)[..., 0])
        _save(tmp_path / split / 'Segmentation_labels' / '00001D.png', _mask())
    ds = open_labelled_dataset(tmp_path, 'msrs_seg', 'test')
    s = ds[0]
    assert ds.class_names == list(MFNET_CLASSES) and len(ds.class_names) == 9
    np.testing.assert_array_equal(s['mask'], _mask())
    np.testing.assert_array_equal(s['rgb'], _rgb())
    assert s['boxes_rgb'].shape == (0, 4) and s['labels_ir'].shape == (0,)
    _save(tmp_path / 'test' / 'Segmentation_labels' / '00001D.png', np.full((H, W), 9, np.uint8))
    with pytest.raises(ValueError, match=r'Segmentation_labels/00001D\.png holds class ids \[9\]'):
        ds[0]


def test_mfnet_four_channel_png_is_rgb_then_thermal(tmp_path):
    rgb, thermal = _rgb(), _rgb(2)[..., 0]
    for name in ('00001D', '00002N'):
        _save(tmp_path / 'images' / f'{name}.png', np.dstack([rgb, thermal]))  # R, G, B, T
        _save(tmp_path / 'labels' / f'{name}.png', _mask())
    (tmp_path / 'train.txt').write_text('00001D\n')
    (tmp_path / 'test.txt').write_text('00002N.png\n')
    ds = open_labelled_dataset(tmp_path, 'mfnet', 'test')
    assert len(ds) == 1 and ds[0]['name'] == '00002N'
    np.testing.assert_array_equal(ds[0]['rgb'], rgb)
    np.testing.assert_array_equal(ds[0]['thermal'], thermal)
    np.testing.assert_array_equal(ds[0]['mask'], _mask())


# ---------------------------------------------------------------- detection layouts


def _pair(rgb_path: Path, ir_path: Path) -> None:
    _save(rgb_path, _rgb())
    _save(ir_path, _rgb(1)[..., 0])


def test_m3fd_coco_json_maps_categories_by_name(tmp_path):
    for name in ('00000', '00001'):
        _pair(tmp_path / 'Vis' / f'{name}.png', tmp_path / 'Ir' / f'{name}.png')
    coco = {'images': [{'id': 7, 'file_name': '00001.png'}, {'id': 8, 'file_name': '00000.png'}],
            'categories': [{'id': 1, 'name': 'Truck'}, {'id': 2, 'name': 'People'}],
            'annotations': [{'id': 1, 'image_id': 7, 'category_id': 1, 'bbox': [4, 5, 10, 20]},
                            {'id': 2, 'image_id': 7, 'category_id': 2, 'bbox': [50, 30, 20, 20]}]}
    (tmp_path / 'train.json').write_text(json.dumps(coco))
    ds = open_labelled_dataset(tmp_path, 'm3fd', 'train')
    assert [ds[i]['name'] for i in range(len(ds))] == ['00000', '00001']
    s = ds[1]
    np.testing.assert_allclose(s['boxes_rgb'], [[4, 5, 14, 25], [50, 30, 56, 40]])  # clipped
    assert s['labels_rgb'].tolist() == [5, 0]  # Truck, People in M3FD_CLASSES order
    np.testing.assert_array_equal(s['boxes_ir'], s['boxes_rgb'])
    assert ds[0]['boxes_rgb'].shape == (0, 4)
    coco['annotations'][1]['bbox'] = [50, '', 20, 20]  # an exporter's empty field
    (tmp_path / 'train.json').write_text(json.dumps(coco))
    with pytest.raises(ValueError, match=r'train\.json: annotation 2 has bbox .*4 numbers'):
        open_labelled_dataset(tmp_path, 'm3fd', 'train')


def test_m3fd_voc_xml_with_split_list(tmp_path):
    _pair(tmp_path / 'Vis' / '00003.png', tmp_path / 'Ir' / '00003.png')
    _voc(tmp_path / 'Annotation' / '00003.xml', [('Car', (1, 2, 30, 20)), ('Lamp', (3, 3, 9, 9))])
    (tmp_path / 'meta').mkdir()
    (tmp_path / 'meta' / 'val.txt').write_text('00003\n')
    s = open_labelled_dataset(tmp_path, 'm3fd', 'val')[0]
    assert s['labels_rgb'].tolist() == [1, 3] and s['labels_ir'].tolist() == [1, 3]
    np.testing.assert_allclose(s['boxes_ir'][0], [1, 2, 30, 20])
    _voc(tmp_path / 'Annotation' / '00003.xml', [('Tram', (1, 2, 30, 20))])
    with pytest.raises(ValueError, match=r'00003\.xml: object 1 has class .tram.'):
        open_labelled_dataset(tmp_path, 'm3fd', 'val')[0]


def test_llvip_voc_layout(tmp_path):
    _pair(tmp_path / 'visible' / 'test' / '190001.jpg',
          tmp_path / 'infrared' / 'test' / '190001.jpg')
    _voc(tmp_path / 'Annotations' / '190001.xml', [('person', (10, 8, 20, 36))])
    ds = open_labelled_dataset(tmp_path, 'llvip', 'test')
    s = ds[0]
    assert ds.class_names == ['person'] and s['rgb'].shape == (H, W, 3)
    np.testing.assert_allclose(s['boxes_rgb'], [[10, 8, 20, 36]])
    np.testing.assert_allclose(s['boxes_ir'], [[10, 8, 20, 36]])


def test_flir_aligned_layout_skips_dogs(tmp_path):
    images = tmp_path / 'JPEGImages'
    for frame in ('FLIR_00001', 'FLIR_00002'):
        _pair(images / f'{frame}_RGB.jpg', images / f'{frame}_PreviewData.jpeg')
        _voc(tmp_path / 'Annotations' / f'{frame}_PreviewData.xml',
             [('person', (1, 1, 9, 19)), ('dog', (20, 20, 30, 30)), ('car', (30, 5, 50, 25))])
    (tmp_path / 'align_train.txt').write_text('FLIR_00001_PreviewData\n')
    (tmp_path / 'align_validation.txt').write_text('FLIR_00002_PreviewData\n')
    ds = open_labelled_dataset(tmp_path, 'flir_aligned', 'validation')
    assert len(ds) == 1 and ds[0]['name'] == 'FLIR_00002'
    assert ds[0]['labels_rgb'].tolist() == [0, 2]
    (tmp_path / 'Annotations' / 'FLIR_00001_PreviewData.xml').write_text('<annotation><obj')
    with pytest.raises(ValueError, match=r'FLIR_00001_PreviewData\.xml is not valid xml'):
        open_labelled_dataset(tmp_path, 'flir_aligned', 'train')[0]


# ---------------------------------------------------------------- joint geometry


def _square_sample(box: tuple[int, int, int, int], height: int = 60, width: int = 80) -> dict:
    """Dark pair with a bright square at `box` in both images; the mask marks it as class 3."""
    x1, y1, x2, y2 = box
    rgb = np.full((height, width, 3), 20, np.uint8)
    thermal = np.full((height, width), 1000, np.uint16)
    mask = np.zeros((height, width), np.uint8)
    rgb[y1:y2, x1:x2] = 230
    thermal[y1:y2, x1:x2] = 60000
    mask[y1:y2, x1:x2] = 3
    boxes = np.array([box], np.float32)
    labels = np.array([1], np.int64)
    return {'rgb': rgb, 'thermal': thermal, 'mask': mask, 'name': 'toy',
            'boxes_rgb': boxes, 'labels_rgb': labels, 'boxes_ir': boxes.copy(),
            'labels_ir': labels.copy()}


def _bright_extent(image: np.ndarray, threshold: float) -> np.ndarray:
    ys, xs = np.nonzero(image > threshold)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@pytest.mark.parametrize('seed', range(6))
@pytest.mark.parametrize('box', [(30, 20, 50, 40), (62, 44, 80, 60)])  # middle; corner (clipped)
def test_a_crop_window_keeps_square_under_box_and_mask(seed, box):
    crop = PairedRandomResizedCrop(size=48, scale=(0.5, 1.0), mode='area', hflip=0.5)
    sample = _square_sample(box)
    window = crop.sample(*sample['thermal'].shape, np.random.default_rng(seed))
    out = apply_window(sample, window, min_box_size=1.0)
    assert out['rgb'].shape == (48, 48, 3) and out['thermal'].dtype == np.uint16
    assert out['mask'].shape == (48, 48)
    if len(out['boxes_rgb']) == 0:  # square cropped away entirely: nothing bright is left
        assert out['rgb'].max() < 128 and not (out['mask'] == 3).any()
        return
    for key, image, threshold in (('rgb', out['rgb'][..., 0], 125), ('ir', out['thermal'], 30500)):
        box = out[f'boxes_{key}'][0]
        np.testing.assert_allclose(_bright_extent(image, threshold), box, atol=1.5)
    np.testing.assert_allclose(_bright_extent(out['mask'], 2), out['boxes_rgb'][0], atol=1.5)
    assert set(np.unique(out['mask']).tolist()) <= {0, 3}  # nearest: no blended ids


def test_a_flipped_window_moves_box_with_images_and_drops_boxes_outside():
    crop = PairedRandomResizedCrop(size=40, scale=(1.0, 1.0), ratio=(0.5, 2.0), mode='area',
                                   hflip=1.0)
    sample = _square_sample((5, 10, 25, 30), height=40, width=40)
    out = apply_window(sample, crop.sample(40, 40, np.random.default_rng(0)), 2.0)
    np.testing.assert_allclose(out['boxes_rgb'][0], [15, 10, 35, 30])  # mirrored x
    np.testing.assert_allclose(_bright_extent(out['thermal'], 30500), [15, 10, 35, 30])
    centre = PairedRandomResizedCrop(size=20, mode='area')  # eval: centred 40x40 of 40x80
    away = _square_sample((0, 0, 4, 4), height=40, width=80)  # outside columns 20..60
    out = apply_window(away, centre.center(40, 80), 2.0)
    assert out['boxes_rgb'].shape == (0, 4) and out['labels_ir'].shape == (0,)
