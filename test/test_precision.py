"""`precision: auto` per CPU, and int8 weights that cannot saturate on CPUs without VNNI."""

import numpy as np
import pytest
from toy import write_toy_model

from univ_core.inference import precision
from univ_core.inference.precision import (
    int8_reduce_range,
    parse_cpuinfo,
    resolve_precision,
)

EPYC_AVX2 = """processor\t: 0
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2
"""
XEON_VNNI_BF16 = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16
"""
XEON_VNNI = """processor\t: 0
model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz
flags\t\t: fpu sse2 avx avx2 avx512f avx512_vnni
"""


@pytest.mark.parametrize('text, torch_cpu, onnx_cpu, reduce', [
    (EPYC_AVX2, 'fp32', 'fp32', True),  # bf16 emulated (7x slower), int8 saturates
    (XEON_VNNI, 'fp32', 'int8', False),
    (XEON_VNNI_BF16, 'bf16', 'int8', False),
])
def test_auto_picks_the_fast_accurate_precision_of_each_cpu(text, torch_cpu, onnx_cpu, reduce):
    features = parse_cpuinfo(text)
    assert resolve_precision('auto', 'torch', 'cpu', features) == torch_cpu
    assert resolve_precision('auto', 'onnxruntime', 'cpu', features) == onnx_cpu
    assert int8_reduce_range(features) is reduce
    assert resolve_precision('auto', 'torch', 'cuda', features) == 'fp16'
    assert resolve_precision('fp32', 'torch', 'cpu', features) == 'fp32'  # explicit wins
    assert features.name in features.summary()


def int8_weights(graph: bytes) -> np.ndarray:
    """Every int8 weight initializer of a quantised graph, flattened."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(graph)
    arrays = [numpy_helper.to_array(t).ravel() for t in model.graph.initializer
              if t.data_type == onnx.TensorProto.INT8]
    return np.concatenate(arrays)


def test_int8_weights_use_7_bits_on_a_cpu_without_vnni(tmp_path, monkeypatch):
    """Full-range s8 weights saturate AVX2's u8 x s8 pair sums (43 % of mask pixels flipped)."""
    from univ_core.export.onnx import export_onnx
    from univ_core.inference.onnx_backend import quantize_int8
    from univ_core.models.model_file import load_model

    model, spec = load_model(write_toy_model(tmp_path / 'toy.safetensors'))
    export_onnx(model, spec, tmp_path / 'toy.onnx', batch=1)
    graph = (tmp_path / 'toy.onnx').read_bytes()
    full = int8_weights(quantize_int8(graph, reduce_range=False))
    # 2 x 255 x |w| must stay below 32767 (int16 pair sums): |w| <= 64 is safe, 127 is not
    assert np.abs(full.astype(int)).max() > 64  # 8-bit weights: the saturating kind
    monkeypatch.setattr(precision, 'cpu_features', lambda: parse_cpuinfo(EPYC_AVX2))
    seven = int8_weights(quantize_int8(graph))  # default: chosen for the running CPU
    assert np.abs(seven.astype(int)).max() <= 64
    monkeypatch.setattr(precision, 'cpu_features', lambda: parse_cpuinfo(XEON_VNNI))
    vnni = int8_weights(quantize_int8(graph))
    assert np.abs(vnni.astype(int)).max() > 64  # exact with VNNI: the full range is kept
