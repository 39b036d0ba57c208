"""Paired RGB-T data: decoding, native layouts, shared geometry, normalisation, held-out split."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from univ_core.data.home import data_home
from univ_core.data.io import read_mfnet, read_pair, read_rgb, read_thermal
from univ_core.data.paired import (
    PairedRgbtDataset,
    PairPaths,
    build_pretrain_dataset,
    detect_layout,
    find_pairs,
    load_pair,
    split_holdout,
)
from univ_core.data.thermal import ThermalNorm
from univ_core.data.transforms import (
    IR_MEAN,
    IR_STD,
    RGB_MEAN,
    RGB_STD,
    PairedRandomResizedCrop,
    rgb_to_tensor,
    thermal_to_tensor,
    thermal_to_unit,
)
from univ_core.inference.preprocess import Preprocessor

DATA = data_home()


def write(path: Path, image: np.ndarray) -> Path:
    """Write an image (BGR order for colour), creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image), path
    return path


def tiny(seed: int = 0, shape: tuple = (12, 16, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def write_pair(rgb: Path, ir: Path, seed: int = 0) -> None:
    write(rgb, tiny(seed))
    write(ir, tiny(seed, (12, 16)))


def smooth_rgb(height: int = 60, width: int = 90, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 RGB texture, distinct everywhere, so misplaced crops are visible."""
    noise = np.random.default_rng(seed).random((height // 6, width // 6, 3)).astype(np.float32)
    big = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    return (big.clip(0, 1) * 255).astype(np.uint8)


# ---------------------------------------------------------------- real shared data
@pytest.mark.parametrize(('folder', 'layout', 'split', 'count'), [
    ('roadscene', 'roadscene', None, 221),
    ('roadscene', 'auto', None, 221),
    ('llvip', 'llvip', 'train', 32),
    ('llvip', 'auto', None, 32),
    ('msrs_mini', 'msrs', 'train', 34),
    ('msrs_mini', 'auto', None, 34),
])
def test_real_data_pair_counts(folder, layout, split, count):
    pairs = find_pairs(DATA / folder, layout, split)
    assert len(pairs) == count
    assert all(p.rgb.stem == p.ir.stem and p.rgb != p.ir for p in pairs)
    assert len({p.name for p in pairs}) == count


def test_real_layout_detection_and_names():
    assert detect_layout(DATA / 'llvip') == 'llvip'
    assert detect_layout(DATA / 'msrs_mini') == 'msrs'
    assert detect_layout(DATA / 'roadscene') == 'folder'  # the vi/ir mirror
    assert find_pairs(DATA / 'llvip', 'llvip', 'train')[0].name == '010001'
    assert find_pairs(DATA / 'llvip', 'llvip')[0].name == 'train/010001'


def test_real_items_are_normalised_tensors():
    pairs = find_pairs(DATA / 'llvip', 'llvip', 'train')[:1]
    rgb, thermal = read_pair(pairs[0].rgb, pairs[0].ir)
    assert rgb.shape == (1024, 1280, 3) and thermal.shape == (1024, 1280)  # 3-ch grey -> 1
    item = PairedRgbtDataset(pairs, size=56, train=True, seed=3)[0]
    assert item['rgb'].shape == item['ir'].shape == (3, 56, 56)
    assert item['rgb'].dtype == item['ir'].dtype == torch.float32
    assert torch.equal(item['ir'][0], item['ir'][2]) and item['name'] == '010001'
    assert -2.2 < item['ir'].min() and item['ir'].max() < 1.9  # (0 - m) / s .. (1 - m) / s


def test_build_pretrain_dataset_concatenates_sources():
    dataset = build_pretrain_dataset([(DATA / 'roadscene', 'roadscene'),
                                      (DATA / 'llvip', 'llvip', 'train'),
                                      (DATA / 'msrs_mini', 'auto')], size=28)
    assert len(dataset) == 221 + 32 + 34
    assert dataset[-1]['rgb'].shape == (3, 28, 28)


# ---------------------------------------------------------------- synthetic native layouts
def make_m3fd(root: Path) -> None:
    for i in range(3):
        write_pair(root / 'Vis' / f'{i:05d}.png', root / 'Ir' / f'{i:05d}.png', i)


def make_flir(root: Path) -> None:
    images = root / 'JPEGImages'
    for i in (2, 5, 9):
        write(images / f'FLIR_{i:05d}_RGB.jpg', tiny(i))
        write(images / f'FLIR_{i:05d}_PreviewData.jpeg', tiny(i, (12, 16)))
    lists = root / 'ImageSets' / 'Main'
    lists.mkdir(parents=True)
    (lists / 'align_train.txt').write_text('FLIR_00002_PreviewData\nFLIR_00005_PreviewData\n')
    (root / 'align_validation.txt').write_text('FLIR_00009\n')


def make_kaist(root: Path) -> None:
    for set_dir, video in (('set00', 'V000'), ('set01', 'V002'), ('set06', 'V000')):
        for i in range(2):
            base = root / 'images' / set_dir / video
            write_pair(base / 'visible' / f'I{i:05d}.jpg', base / 'lwir' / f'I{i:05d}.jpg', i)


def make_mfnet(root: Path) -> None:
    for i, name in enumerate(('00001D', '00002N', '00003N')):
        write(root / 'images' / f'{name}.png', tiny(i, (12, 16, 4)))
    (root / 'train.txt').write_text('00001D\n00002N\n')
    (root / 'val.txt').write_text('00003N\n')


def make_llvip(root: Path) -> None:
    for split in ('train', 'test'):
        for i in range(2):
            name = f'{split}{i}.jpg'
            write_pair(root / 'visible' / split / name, root / 'infrared' / split / name, i)


def make_msrs(root: Path) -> None:
    for split, names in (('train', ('00001D', '00002N')), ('test', ('00001D',))):
        for name in names:
            write_pair(root / split / 'vi' / f'{name}.png', root / split / 'ir' / f'{name}.png')


def make_roadscene(root: Path) -> None:
    for i in range(4):
        write_pair(root / 'crop_LR_visible' / f'FLIR_{i:05d}.jpg',
                   root / 'cropinfrared' / f'FLIR_{i:05d}.jpg', i)


def make_mvip(root: Path) -> None:
    for split in ('training', 'validation'):
        write_pair(root / 'vi_images' / split / 'a.png', root / 'images' / split / 'a.png')


def make_folder(root: Path) -> None:
    for i in range(2):
        write_pair(root / 'vi' / f'{i}.bmp', root / 'ir' / f'{i}.bmp', i)


@pytest.mark.parametrize(('layout', 'make', 'split', 'names'), [
    ('m3fd', make_m3fd, None, ['00000', '00001', '00002']),
    ('flir_aligned', make_flir, None, ['FLIR_00002', 'FLIR_00005', 'FLIR_00009']),
    ('flir_aligned', make_flir, 'train', ['FLIR_00002', 'FLIR_00005']),
    ('flir_aligned', make_flir, 'val', ['FLIR_00009']),
    ('kaist', make_kaist, None, ['set00_V000_I00000', 'set00_V000_I00001', 'set01_V002_I00000',
                                 'set01_V002_I00001', 'set06_V000_I00000', 'set06_V000_I00001']),
    ('kaist', make_kaist, 'test', ['set06_V000_I00000', 'set06_V000_I00001']),
    ('mfnet', make_mfnet, None, ['00001D', '00002N', '00003N']),
    ('mfnet', make_mfnet, 'train', ['00001D', '00002N']),
    ('llvip', make_llvip, None, ['train/train0', 'train/train1', 'test/test0', 'test/test1']),
    ('llvip', make_llvip, 'test', ['test0', 'test1']),
    ('msrs', make_msrs, None, ['train/00001D', 'train/00002N', 'test/00001D']),
    ('msrs', make_msrs, 'test', ['00001D']),
    ('roadscene', make_roadscene, None, [f'FLIR_{i:05d}' for i in range(4)]),
    ('mvip', make_mvip, 'train', ['a']),
    ('folder', make_folder, None, ['0', '1']),
])
def test_native_layouts(tmp_path, layout, make, split, names):
    make(tmp_path)
    assert detect_layout(tmp_path) == layout
    pairs = find_pairs(tmp_path, layout, split)
    assert [p.name for p in pairs] == names
    assert find_pairs(tmp_path, 'auto', split) == pairs
    item = PairedRgbtDataset(pairs, size=8, train=True, seed=0)[len(pairs) - 1]
    assert item['rgb'].shape == item['ir'].shape == (3, 8, 8)


def test_flir_pairs_point_at_rgb_and_preview(tmp_path):
    make_flir(tmp_path)
    pair = find_pairs(tmp_path, 'flir_aligned', 'val')[0]
    assert pair.rgb.name == 'FLIR_00009_RGB.jpg'
    assert pair.ir.name == 'FLIR_00009_PreviewData.jpeg'


def test_mfnet_channels_split_into_rgb_and_thermal(tmp_path):
    make_mfnet(tmp_path)
    pair = find_pairs(tmp_path, 'mfnet', 'val')[0]
    assert pair.rgb == pair.ir
    bgra = tiny(2, (12, 16, 4))
    rgb, thermal = read_mfnet(pair.rgb)
    np.testing.assert_array_equal(rgb, bgra[..., 2::-1])
    np.testing.assert_array_equal(thermal, bgra[..., 3])


# ---------------------------------------------------------------- errors
def test_empty_source_names_root_and_layout(tmp_path):
    (tmp_path / 'Vis').mkdir()
    (tmp_path / 'Ir').mkdir()
    with pytest.raises(ValueError, match=rf"{tmp_path}.*'m3fd'.*Vis/ and Ir/"):
        find_pairs(tmp_path, 'm3fd')
    with pytest.raises(ValueError, match=rf"{tmp_path}.*split 'test'.*'llvip'"):
        find_pairs(tmp_path, 'llvip', 'test')
    with pytest.raises(ValueError, match='cannot tell the layout'):
        detect_layout(tmp_path / 'Vis')
    with pytest.raises(FileNotFoundError, match='nowhere'):
        find_pairs(tmp_path / 'nowhere', 'auto')
    with pytest.raises(ValueError, match='layout'):
        find_pairs(tmp_path, 'vedai')


def test_unpaired_image_and_missing_list_entry_are_errors(tmp_path):
    make_folder(tmp_path)
    write(tmp_path / 'vi' / 'extra.png', tiny())
    with pytest.raises(ValueError, match="partner.*'extra'"):
        find_pairs(tmp_path, 'folder')
    make_mfnet(tmp_path / 'mf')
    (tmp_path / 'mf' / 'test.txt').write_text('09999N\n')
    with pytest.raises(FileNotFoundError, match='09999N.png'):
        find_pairs(tmp_path / 'mf', 'mfnet', 'test')


def test_size_mismatch_names_both_files(tmp_path):
    rgb = write(tmp_path / 'vi' / 'a.png', tiny(0, (12, 16, 3)))
    ir = write(tmp_path / 'ir' / 'a.png', tiny(0, (10, 16)))
    dataset = PairedRgbtDataset(find_pairs(tmp_path, 'folder'), size=8)
    with pytest.raises(ValueError, match=rf'{rgb} is 16x12 but thermal {ir} is 16x10'):
        dataset[0]


def test_corrupt_and_missing_files_are_named(tmp_path):
    bad = tmp_path / 'bad.jpg'
    bad.write_bytes(b'not a jpeg at all')
    with pytest.raises(ValueError, match=str(bad)):
        read_rgb(bad)
    with pytest.raises(ValueError, match=str(bad)):
        read_thermal(bad)
    with pytest.raises(FileNotFoundError, match='gone.png'):
        read_thermal(tmp_path / 'gone.png')
    three = write(tmp_path / 'three.png', tiny(0, (12, 16, 3)))
    with pytest.raises(ValueError, match=f'{three}.*expected \\(H, W, 4\\)'):
        read_mfnet(three)


def test_thermal_decoding_keeps_depth_and_rejects_colour(tmp_path):
    raw = np.arange(12 * 16, dtype=np.uint16).reshape(12, 16) * 300
    np.testing.assert_array_equal(read_thermal(write(tmp_path / 'a.png', raw)), raw)
    grey = tiny(1, (12, 16))
    three = write(tmp_path / 'g.png', np.repeat(grey[..., None], 3, axis=2))
    np.testing.assert_array_equal(read_thermal(three), grey)
    with pytest.raises(ValueError, match='colour channels'):
        read_thermal(write(tmp_path / 'c.png', tiny(2)))


# ---------------------------------------------------------------- geometry
@pytest.mark.parametrize('mode', ['side', 'area'])
@pytest.mark.parametrize('seed', range(6))
def test_paired_crop_keeps_pixel_correspondence(mode, seed):
    rgb = smooth_rgb(seed=seed)
    ir = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)  # (H, W) the same scene as RGB
    crop = PairedRandomResizedCrop(size=32, mode=mode)(rgb, ir, np.random.default_rng(seed))
    assert crop.rgb.shape == (32, 32, 3) and crop.ir.shape == (32, 32)
    diff = np.abs(cv2.cvtColor(crop.rgb, cv2.COLOR_RGB2GRAY).astype(int) - crop.ir)
    assert diff.max() <= 2  # only rounding differs
    mirrored = np.abs(cv2.cvtColor(crop.rgb[:, ::-1], cv2.COLOR_RGB2GRAY).astype(int) - crop.ir)
    assert mirrored.mean() > 5  # the check above would see a flip applied to one image only


def test_crop_windows_follow_their_mode():
    rng = np.random.default_rng(0)
    side, area = PairedRandomResizedCrop(mode='side'), PairedRandomResizedCrop(mode='area')
    flips = 0
    for _ in range(200):
        w = side.sample(480, 640, rng)
        assert 0.4 * 480 - 1 <= w.height <= 480 and abs(w.width / w.height - 640 / 480) < 0.02
        assert w.top + w.height <= 480 and w.left + w.width <= 640
        flips += w.flip
        w = area.sample(480, 640, rng)
        assert 0.39 <= w.height * w.width / (480 * 640) <= 1.0
        assert 3 / 4 - 0.02 <= w.width / w.height <= 4 / 3 + 0.02
    assert 70 < flips < 130


def test_boxes_and_mask_move_with_the_images():
    rgb = smooth_rgb(80, 100)
    mask = np.zeros((80, 100), np.uint8)
    mask[20:50, 30:70] = 1  # rows 20..49, cols 30..69
    box = np.array([[30, 20, 70, 50]], np.float32)  # the same rectangle, xyxy
    crop_fn = PairedRandomResizedCrop(size=40, scale=(0.8, 1.0), hflip=1.0)
    crop = crop_fn(rgb, rgb[..., 0], np.random.default_rng(1), boxes=box, mask=mask)
    assert crop.window.flip
    rows, cols = np.nonzero(crop.mask)
    expected = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
    np.testing.assert_allclose(crop.boxes[0], expected, atol=1.0)
    assert set(np.unique(crop.mask)) == {0, 1}  # nearest: no blended class ids


def test_eval_crop_is_deterministic_and_unflipped():
    rgb = smooth_rgb(60, 90)
    crop_fn = PairedRandomResizedCrop(size=30)
    a = crop_fn(rgb, rgb[..., 1])
    assert a.window == crop_fn.center(60, 90) and not a.window.flip
    assert (a.window.height, a.window.width) == (60, 90)  # 'side': the whole image
    square = PairedRandomResizedCrop(size=30, mode='area').center(60, 90)
    assert (square.top, square.left, square.height, square.width) == (0, 15, 60, 60)


def test_seeded_sampling_is_reproducible(tmp_path):
    make_m3fd(tmp_path)
    pairs = find_pairs(tmp_path, 'm3fd')
    one, two = (PairedRgbtDataset(pairs, size=8, seed=5) for _ in range(2))
    assert torch.equal(one.sample(1, epoch=2)['ir'], two.sample(1, epoch=2)['ir'])
    assert not torch.equal(one.sample(1, epoch=2)['rgb'], one.sample(1, epoch=3)['rgb'])
    evaluation = PairedRgbtDataset(pairs, size=8, train=False, seed=5)
    assert torch.equal(evaluation.sample(0, epoch=0)['rgb'], evaluation.sample(0, epoch=9)['rgb'])
    crop_fn = PairedRandomResizedCrop()
    windows = [crop_fn.sample(100, 120, torch.Generator().manual_seed(4)) for _ in range(2)]
    assert windows[0] == windows[1]


# ---------------------------------------------------------------- normalisation
def test_normalisation_values():
    mean_rgb = np.round(np.array(RGB_MEAN) * 255).astype(np.uint8)
    x = rgb_to_tensor(np.broadcast_to(mean_rgb, (4, 5, 3)).copy())
    assert x.shape == (3, 4, 5) and x.abs().max() < 0.01
    np.testing.assert_allclose(rgb_to_tensor(np.full((2, 2, 3), 255, np.uint8))[:, 0, 0],
                               (1 - np.array(RGB_MEAN)) / np.array(RGB_STD), rtol=1e-5)
    t = thermal_to_tensor(thermal_to_unit(np.array([[0, 255]], np.uint8)))
    assert t.shape == (3, 1, 2) and torch.equal(t[0], t[2])
    np.testing.assert_allclose(t[0, 0], [-IR_MEAN / IR_STD, (1 - IR_MEAN) / IR_STD], rtol=1e-5)
    fixed = ThermalNorm(mode='fixed', low=1000, high=2000)
    ranged = thermal_to_unit(np.array([[1000, 1500, 3000]], np.uint16), fixed)
    np.testing.assert_allclose(ranged[0], [0, 0.5, 1], atol=1e-6)
    with pytest.raises(ValueError, match='thermal_to_unit'):
        thermal_to_tensor(np.zeros((2, 2), np.uint8))


def test_16bit_thermal_maps_the_same_in_pretraining_and_inference(data_dir, tmp_path):
    """A radiometric 16-bit frame (a real thermal image rescaled to 7000-9000 counts, the range
    of an uncalibrated LWIR core) is stretched between its 1st and 99th percentiles by the
    pre-training dataset exactly as by the Predictor's preprocessing: not squeezed into
    (9000 - 7000) / 65535 = 3 % of the range, as a linear 0..65535 mapping would."""
    pair = find_pairs(data_dir / 'msrs_mini', 'msrs', 'train')[0]
    rgb, ir8 = load_pair(pair)
    ir16 = (7000 + ir8.astype(np.float64) * (2000 / 255)).astype(np.uint16)  # (H, W) uint16
    assert cv2.imwrite(str(tmp_path / 'ir16.png'), ir16)
    pair16 = PairPaths(pair.rgb, tmp_path / 'ir16.png', 'ir16')
    assert load_pair(pair16)[1].dtype == np.uint16
    h, w = ir16.shape
    crop = PairedRandomResizedCrop(size=(h // 2, w // 2))
    train_view = PairedRgbtDataset([pair16], train=False, crop=crop)[0]['ir']  # (3, h/2, w/2)
    prep = Preprocessor((h // 2, w // 2), ThermalNorm(), torch.device('cpu'))
    infer_view = prep.thermal([ir16])[0]  # (3, h/2, w/2)
    unit = train_view[0] * IR_STD + IR_MEAN
    assert float(unit.max() - unit.min()) > 0.9  # full contrast, not 3 % of the range
    assert float((train_view - infer_view).abs().mean()) < 0.02  # resize kernels differ only
    low, high = np.percentile(ir16[::4, ::4], [1, 99])
    np.testing.assert_allclose(thermal_to_unit(ir16),
                               ((ir16 - low) / (high - low)).clip(0, 1), atol=1e-4)


# ---------------------------------------------------------------- held-out split
def fake_pairs(n: int) -> list[PairPaths]:
    return [PairPaths(Path(f'v/{i}.png'), Path(f'i/{i}.png'), f'p{i:03d}') for i in range(n)]


def test_holdout_count_is_exact_and_order_free():
    pairs = fake_pairs(50)
    train, held = split_holdout(pairs, 7, seed=1)
    assert len(held) == 7 and len(train) == 43 and not {p.name for p in train} & {
        p.name for p in held}
    _, held_reversed = split_holdout(pairs[::-1], 7, seed=1)
    assert {p.name for p in held_reversed} == {p.name for p in held}
    _, other_seed = split_holdout(pairs, 7, seed=2)
    assert {p.name for p in other_seed} != {p.name for p in held}


def test_holdout_fraction_does_not_depend_on_other_pairs():
    pairs = fake_pairs(400)
    _, held = split_holdout(pairs, 0.2, seed=0)
    assert 50 < len(held) < 110
    _, held_half = split_holdout(pairs[::2], 0.2, seed=0)
    assert {p.name for p in held_half} == {p.name for p in held} & {p.name for p in pairs[::2]}


@pytest.mark.parametrize('amount', [50, -1, 1.0, True, '3'])
def test_holdout_rejects_bad_amounts(amount):
    with pytest.raises(ValueError, match='holdout'):
        split_holdout(fake_pairs(50), amount)
