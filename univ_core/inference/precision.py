"""Numeric precision chosen for the running hardware (``precision: auto``).

What is fast and accurate depends on the CPU's instruction set, not on the model:

- bf16 autocast is fast only with native bf16 dot products (AVX512-BF16 or AMX); on an
  AVX2-only CPU PyTorch emulates it and a ViT-S ran 7x slower than fp32 (bench/RESULTS.md).
- int8 MatMuls (onnxruntime dynamic quantisation, u8 activations x s8 weights) are exact in
  int32 with VNNI (AVX512-VNNI / AVX-VNNI). Without VNNI, onnxruntime multiplies with AVX2's
  ``vpmaddubsw``, whose int16 pair sums saturate for 8-bit weights; 7-bit weights
  (``reduce_range``) cannot saturate. On such a CPU full-range int8 flipped 43 % of the mask
  pixels of a ViT-S; reduce_range keeps 99.9 %.

``auto``: on CUDA fp16; on a CPU bf16 where it is native, else fp32 (torch backend), and int8
with the onnxruntime backend only where VNNI makes it exact.
"""

import functools
import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CpuFeatures:
    """The instruction-set extensions that decide the CPU precision."""

    name: str  # model name, for reports
    avx2: bool
    avx512: bool  # AVX-512 F
    vnni: bool  # AVX512-VNNI or AVX-VNNI: exact u8 x s8 dot products
    bf16: bool  # AVX512-BF16 or AMX-BF16: native bf16 dot products

    def summary(self) -> str:
        """One line for benchmark headers."""
        flags = [f for f in ('avx2', 'avx512', 'vnni', 'bf16') if getattr(self, f)]
        return f'{self.name} [{" ".join(flags) or "no AVX2"}]'


@functools.cache
def cpu_features(cpuinfo: str = '/proc/cpuinfo') -> CpuFeatures:
    """The running CPU's features (Linux /proc/cpuinfo; elsewhere: none assumed)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return CpuFeatures(platform.processor() or platform.machine(), False, False, False, False)
    return parse_cpuinfo(text)


def parse_cpuinfo(text: str) -> CpuFeatures:
    """CpuFeatures from the text of /proc/cpuinfo (the first processor's flags)."""
    name, flags = 'unknown CPU', set()
    for line in text.splitlines():
        key, _, value = line.partition(':')
        key = key.strip()
        if key == 'model name' and name == 'unknown CPU':
            name = value.strip()
        elif key in ('flags', 'Features') and not flags:
            flags = set(value.split())
    return CpuFeatures(
        name=name, avx2='avx2' in flags, avx512='avx512f' in flags,
        vnni=bool(flags & {'avx512_vnni', 'avx_vnni'}),
        bf16=bool(flags & {'avx512_bf16', 'amx_bf16'}))


def int8_reduce_range(features: CpuFeatures | None = None) -> bool:
    """Whether int8 weights must use 7 bits here (no VNNI: 8-bit products saturate)."""
    return not (features or cpu_features()).vnni


def resolve_precision(precision: str, backend: str, device_type: str,
                      features: CpuFeatures | None = None) -> str:
    """The concrete precision for a config value (``auto`` resolved, others unchanged).

    Args:
        precision: 'auto' | 'fp32' | 'bf16' | 'fp16' | 'int8'.
        backend: 'torch' | 'onnxruntime'.
        device_type: 'cpu' | 'cuda'.
        features: the CPU's (default: the running one).
    """
    if precision != 'auto':
        return precision
    if device_type == 'cuda':
        return 'fp32' if backend == 'onnxruntime' else 'fp16'
    features = features or cpu_features()
    if backend == 'onnxruntime':
        return 'int8' if features.vnni else 'fp32'
    return 'bf16' if features.bf16 else 'fp32'
