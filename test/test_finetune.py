"""`univ finetune` + `univ eval` on a toy backbone and the real msrs_mini boxes."""

import json

import pytest
from coco_reference import coco_ap50
from toy import MSRS_DET_CLASSES, TOY, TOY_ARCH

from univ_core.eval.downstream import evaluate
from univ_core.inference import PredictorConfig, load_predictor
from univ_core.models.model_file import read_spec
from univ_core.train.downstream_data import Split, open_split
from univ_core.train.finetune import FinetuneConfig, finetune


def toy_config(data_dir, out, **extra) -> FinetuneConfig:
    split = Split(str(data_dir / 'msrs_mini'), 'msrs_det', 'train', holdout=8)
    return FinetuneConfig(task='det', modality='ir', data=split, arch=TOY_ARCH, backbone='none',
                          backbone_overrides=dict(TOY), input_size=(56, 70), head_channels=32,
                          epochs=1, batch_size=8, out_dir=str(out), **extra)


def test_head_only_finetune_writes_a_model_the_predictor_and_eval_use(data_dir, tmp_path):
    path = finetune(toy_config(data_dir, tmp_path / 'run'), quiet=True)
    spec = read_spec(path)
    assert spec.det_classes == MSRS_DET_CLASSES and spec.seg_classes is None
    rows = [json.loads(line) for line in (tmp_path / 'run' / 'log.jsonl').read_text().splitlines()]
    assert [r['step'] for r in rows] == [1, 2, 3] and all(r['loss'] > 0 for r in rows)  # 26 imgs
    _, held = open_split(toy_config(data_dir, tmp_path).data)
    assert len(held) == 8
    predictor = load_predictor(PredictorConfig(model=str(path), device='cpu', precision='fp32',
                                               score_threshold=0.0))
    metrics, _ = evaluate('det', predictor, held, ['ir', 'rgb'])
    assert set(metrics) == {'ir', 'rgb'}
    # the same number as pycocotools' COCOeval directly (3 toy steps: ~0; test_default_model
    # checks this on a trained model)
    assert metrics['ir']['map50'] == pytest.approx(coco_ap50(predictor, held, 'ir'), abs=1e-6)
    # `univ eval` scores in fp32 on every CPU (precision auto would pick bf16 / int8 where the
    # CPU has them, and its numbers would differ from the transfer tool's and univ demo's)
    from univ_ros import cli

    out = tmp_path / 'eval'
    assert cli.main(['eval', 'det', '--model', str(path), '--data', str(data_dir / 'msrs_mini'),
                     '--holdout', '8', '--device', 'cpu', '--modality', 'ir',
                     '--out', str(out)]) == 0
    report = json.loads((out / 'report.json').read_text())
    assert report['precision'] == 'fp32' and report['pairs'] == 8
    assert report['results']['ir']['map50'] == pytest.approx(metrics['ir']['map50'], abs=1e-6)



def test_seg_class_weights_count_the_labelled_pixels_of_every_view():
    import torch

    from univ_core.train.finetune import seg_class_weights

    masks = [torch.tensor([[0, 0, 0, 255]]), torch.tensor([[0, 0, 0, 0], [0, 0, 1, 255]])]
    samples = [(None, {'mask': m}) for m in masks]  # class 0: 9 px, class 1: 1 px, 2 ignored
    cfg = FinetuneConfig(task='det+seg', seg_class_balance=0.5)
    weights = seg_class_weights(samples, cfg, num_classes=3)
    assert weights[1] / weights[0] == pytest.approx(3.0)  # sqrt(9 / 1)
    assert (weights[0] * 9 + weights[1]) / 10 == pytest.approx(1.0)
    assert seg_class_weights(samples, FinetuneConfig(task='det+seg'), 3) is None  # default
    assert seg_class_weights(samples, FinetuneConfig(task='det', seg_class_balance=0.5), 3) is None


def test_the_seg_prior_correction_moves_decisions_back_by_its_fraction_of_the_weights():
    import torch

    from univ_core.train.finetune import correct_seg_prior

    head = torch.nn.Module()
    head.classifier = torch.nn.Conv2d(4, 3, kernel_size=1)
    features = torch.randn(2, 4, 5, 6)
    weights = torch.tensor([0.5, 1.0, 8.0])  # class 2 rare: its weighted logits too high
    before = head.classifier(features)
    correct_seg_prior(head, weights, 0.5)
    after = head.classifier(features)
    assert torch.allclose(after, before - 0.5 * weights.log()[:, None, None], atol=1e-6)
    assert (after.argmax(1) == 2).sum() <= (before.argmax(1) == 2).sum()
    with pytest.raises(ValueError, match='seg_prior_correction'):
        FinetuneConfig(seg_prior_correction=1.5)


def test_crop_views_of_16_bit_thermal_keep_the_whole_frames_mapping():
    """A crop is mapped to [0, 1] as part of its frame (inference's view), not stretched alone."""
    import numpy as np
    import torch

    from univ_core.data.thermal import ThermalNorm
    from univ_core.data.transforms import IR_MEAN, IR_STD, CropWindow
    from univ_core.inference.preprocess import Preprocessor
    from univ_core.train.views import training_views

    scene = np.tile(np.linspace(20000, 40000, 64).astype(np.uint16), (64, 1))  # a gradient
    no_boxes = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    sample = {'rgb': np.zeros((64, 64, 3), np.uint8), 'thermal': scene, 'mask': None,
              'boxes_rgb': no_boxes[0], 'labels_rgb': no_boxes[1],
              'boxes_ir': no_boxes[0], 'labels_ir': no_boxes[1]}
    prep = Preprocessor((32, 32), ThermalNorm(), torch.device('cpu'))
    left_half = CropWindow(0, 0, 64, 32, (32, 32), False)
    full, crop = (x[0, 0] * IR_STD + IR_MEAN
                  for x, _ in training_views(sample, 'thermal', [None, left_half], prep))
    # scene column 31: the frame's middle (~0.5), also at the right edge of the left-half crop
    assert abs(full[16, 15].item() - 0.5) < 0.05 and abs(crop[16, 31].item() - 0.5) < 0.05


def test_resume_refuses_other_settings_and_a_missing_checkpoint(data_dir, tmp_path, capsys):
    # transfer_protocol resumes every run: heads trained on one backbone must not stand for another
    from univ_core.train.finetune import finetune as run
    from univ_ros import cli

    cfg = toy_config(data_dir, tmp_path / 'run')
    run(cfg, quiet=True)
    assert run(cfg, resume=True, quiet=True).is_file()  # same settings: resumes (done already)
    with pytest.raises(ValueError, match=r'other settings \(seed differ'):
        run(toy_config(data_dir, tmp_path / 'run', seed=1), resume=True, quiet=True)
    assert cli.main(['finetune', 'det', '--resume', f'out_dir={tmp_path / "none"}']) == 1
    assert '--resume: no ' in capsys.readouterr().err
