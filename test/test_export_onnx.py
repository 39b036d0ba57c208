"""ONNX export round trip on a toy model; Predictor backends agree; LoRA merge export."""

import argparse
import collections
import copy

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from toy import TOY, TOY_ARCH, toy_backbone, write_toy_model

from univ_core.export import cli
from univ_core.export.onnx import MatrixAvgPool, export_onnx
from univ_core.inference import Predictor, PredictorConfig, load_predictor
from univ_core.inference.onnx_backend import (
    OnnxPerceptionModel,
    load_onnx_predictor,
    quantize_int8,
)
from univ_core.models.model_file import load_model

SCORE = 0.05  # random FCOS heads score about 0.07 (prior 0.01): keep some boxes


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    work = tmp_path_factory.mktemp('onnx')
    model, spec = load_model(write_toy_model(work / 'toy.safetensors'))
    diffs = export_onnx(model, spec, work / 'toy.onnx', batch=2)
    return model, spec, work / 'toy.onnx', diffs


@pytest.mark.parametrize('hw', [(2, 3), (4, 5), (12, 16), (6, 6)])
def test_matrix_pool_equals_adaptive_pool(hw):
    x = torch.randn(2, 4, *hw)
    for scale in (1, 2, 3, 6):
        got = MatrixAvgPool(scale, hw)(x)
        torch.testing.assert_close(got, torch.nn.AdaptiveAvgPool2d(scale)(x), atol=1e-6, rtol=0)


def test_export_reports_small_differences_and_writes_metadata(exported):
    _, spec, path, diffs = exported
    assert set(diffs) == {'seg_logits', 'cls_logits', 'bbox_regression', 'bbox_ctrness'}
    assert max(diffs.values()) < 1e-4
    onnx_model = OnnxPerceptionModel(path)
    assert onnx_model.input_size == tuple(spec.input_size)
    assert onnx_model.spec.det_classes == spec.det_classes
    assert not list(path.parent.glob('.toy.onnx.*'))  # atomic: no temp file left


def test_onnxruntime_outputs_equal_torch_outputs_any_batch(exported):
    model, spec, path, _ = exported
    onnx_model = OnnxPerceptionModel(path)
    images = torch.randn(3, 3, *spec.input_size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = model(images, score_thresh=SCORE, nms_iou=0.5, max_detections=50)
    got = onnx_model(images, score_thresh=SCORE, nms_iou=0.5, max_detections=50)
    torch.testing.assert_close(got['seg_logits'], want['seg_logits'], atol=1e-4, rtol=1e-4)
    assert sum(len(d['boxes']) for d in want['det']) > 0
    for g, w in zip(got['det'], want['det'], strict=True):
        torch.testing.assert_close(g['labels'], w['labels'])
        torch.testing.assert_close(g['boxes'], w['boxes'], atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(g['scores'], w['scores'], atol=1e-5, rtol=1e-4)


def small_pair(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
            rng.integers(20000, 30000, (48, 64), dtype=np.uint16))


def assert_same_prediction(a, b):
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-5)
    assert a.detections.class_names == b.detections.class_names
    assert len(a.detections.boxes) > 0
    np.testing.assert_allclose(a.detections.boxes, b.detections.boxes, rtol=1e-3, atol=1e-3)


def test_predictor_onnxruntime_equals_torch_on_a_pair(exported):
    model, spec, path, _ = exported
    settings = dict(device='cpu', precision='fp32', score_threshold=SCORE)
    torch_predictor = Predictor(copy.deepcopy(model), spec.seg_classes, spec.det_classes,
                                spec.input_size, PredictorConfig(**settings))
    onnx_predictor = load_predictor(
        PredictorConfig(model=str(path), backend='onnxruntime', **settings))
    in_memory = Predictor(copy.deepcopy(model), spec.seg_classes, spec.det_classes,
                          spec.input_size, PredictorConfig(backend='onnxruntime', **settings))
    rgb, thermal = small_pair()
    want = torch_predictor.predict(rgb, thermal, 'fused')
    assert want.mask.dtype == np.uint8 and want.mask.shape == (48, 64)
    assert_same_prediction(onnx_predictor.predict(rgb, thermal, 'fused'), want)
    assert_same_prediction(in_memory.predict(rgb, thermal, 'fused'), want)


def test_int8_predictor_quantises_matmuls_and_stays_close_to_fp32(exported):
    import onnx

    _, _, path, _ = exported
    def op_counts(graph: bytes) -> collections.Counter:
        return collections.Counter(n.op_type for n in onnx.load_from_string(graph).graph.node)

    before, after = op_counts(path.read_bytes()), op_counts(quantize_int8(path.read_bytes()))
    # The transformer's weight MatMuls become int8; attention's activation x activation ones
    # (and pooling matrices applied from the left) stay fp32.
    assert after['MatMulInteger'] >= 8
    assert after['MatMul'] == before['MatMul'] - after['MatMulInteger']
    settings = dict(device='cpu', score_threshold=SCORE, backend='onnxruntime', model=str(path))
    fp32 = load_predictor(PredictorConfig(precision='fp32', **settings))  # 'auto' may be int8
    int8 = load_predictor(PredictorConfig(precision='int8', **settings))
    rgb, thermal = small_pair()
    want, got = fp32.predict(rgb, thermal), int8.predict(rgb, thermal)
    assert got.mask.shape == want.mask.shape and got.mask.dtype == want.mask.dtype
    assert (got.mask == want.mask).mean() > 0.9  # int8 is close, not equal
    assert not np.array_equal(got.confidence, want.confidence)  # it really ran quantised
    with pytest.raises(ValueError, match='int8'):
        PredictorConfig(precision='int8')  # torch backend
    with pytest.raises(ValueError, match='int8'):
        PredictorConfig(backend='onnxruntime', precision='int8', device='cuda')


def test_num_threads_caps_onnxruntime_too(exported):
    # the node's num_threads leaves cores to its callbacks: it was set for torch only
    import torch

    _, _, path, _ = exported
    before = torch.get_num_threads()  # the Predictor sets torch's too (process-wide)
    try:
        for threads in (1, 2):
            predictor = load_predictor(PredictorConfig(model=str(path), backend='onnxruntime',
                                                       device='cpu', num_threads=threads))
            options = predictor.model.session().get_session_options()
            assert options.intra_op_num_threads == threads
    finally:
        torch.set_num_threads(before)


def test_batched_prediction_equals_one_pair_at_a_time(exported):
    model, spec, _, _ = exported
    predictor = Predictor(model, spec.seg_classes, spec.det_classes, spec.input_size,
                          PredictorConfig(device='cpu', score_threshold=SCORE))
    pairs = [small_pair(seed) for seed in range(3)]
    batched = predictor.predict_batch([p[0] for p in pairs], [p[1] for p in pairs], 'fused')
    for pair, got in zip(pairs, batched, strict=True):
        assert_same_prediction(got, predictor.predict(*pair, 'fused'))


def test_onnx_errors_name_the_problem(exported, tmp_path):
    model, spec, path, _ = exported
    foreign = tmp_path / 'foreign.onnx'
    foreign.write_bytes(b'not onnx')
    with pytest.raises(ValueError, match='foreign.onnx'):
        OnnxPerceptionModel(foreign)
    with pytest.raises(FileNotFoundError, match='missing.onnx'):
        OnnxPerceptionModel(tmp_path / 'missing.onnx')
    with pytest.raises(ValueError, match='exported at'):
        load_onnx_predictor(PredictorConfig(model=str(path), backend='onnxruntime',
                                            input_size=(28, 28)))
    with pytest.raises(ValueError, match='backend onnxruntime'):
        PredictorConfig(backend='onnxruntime', precision='fp16')
    with pytest.raises(ValueError, match='multiples of 14'):
        export_onnx(model, spec, tmp_path / 'bad.onnx', input_size=(50, 70))


def run_cli(*argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.main(parser.parse_args(list(argv)))


def test_cli_exports_onnx_and_prints_diffs_and_trtexec(exported, tmp_path, capsys):
    _, _, path, _ = exported
    model_file = path.with_name('toy.safetensors')
    out = tmp_path / 'cli.onnx'
    assert run_cli('--format', 'onnx', '--model', str(model_file), '--out', str(out),
                   '--input-size', '28', '42', '--batch', '1') == 0
    text = capsys.readouterr().out
    assert 'max abs diff' in text and 'trtexec --onnx=' in text and '--fp16' in text
    assert OnnxPerceptionModel(out).input_size == (28, 42)


def test_cli_merges_a_pretrain_runs_lora(tmp_path, capsys):
    from safetensors.torch import save_file

    from univ_core.train.pretrain import PretrainConfig, build_models, save_checkpoint

    base = tmp_path / 'base.safetensors'
    save_file({k: v.contiguous() for k, v in toy_backbone().state_dict().items()}, str(base))
    cfg = PretrainConfig(arch=TOY_ARCH, weights=str(base), backbone_overrides=dict(TOY),
                         sources=[{'root': str(tmp_path)}], img_size=28, out_dir=str(tmp_path))
    _, student = build_models(cfg, torch.device('cpu'))
    with torch.no_grad():  # a trained-looking LoRA: non-zero B matrices
        for name, param in student.named_parameters():
            if 'lora_B' in name:
                param.normal_(0, 0.05)
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad])
    save_checkpoint(tmp_path, 3, student, optimizer, torch.amp.GradScaler(enabled=False), cfg)
    out = tmp_path / 'merged.safetensors'
    assert run_cli('--format', 'safetensors', '--from-pretrain', str(tmp_path),
                   '--out', str(out)) == 0
    assert 'merged vs unmerged max abs diff' in capsys.readouterr().out
    merged = load_file(str(out))
    assert not any('lora' in k for k in merged)
    plain = toy_backbone()
    plain.load_state_dict(merged, strict=True)
    base_state = load_file(str(base))
    key = 'blocks.0.attn.qkv.weight'
    assert not torch.equal(merged[key], base_state[key])
    with pytest.raises(ValueError, match='from-pretrain'):
        run_cli('--format', 'safetensors', '--out', str(out))
