"""Shared bench helpers: machine/version header, interleaved timing, tables, the default model.

Bench scripts run on demand (``bench/run_all``), never under pytest (testpaths = ['test']).
Baseline and optimised variants are timed INTERLEAVED (one run of each per round, order
rotating), so load from other processes on a shared machine hits every variant alike.
"""

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/bench_x.py` from anywhere
    sys.path.insert(0, str(REPO))

from univ_core.data.labelled import MFNET_CLASSES, MSRS_DET_CLASSES  # noqa: E402 (after sys.path)
from univ_core.models.weights import DEFAULT_ARCH  # noqa: E402

SEG_CLASSES, DET_CLASSES = list(MFNET_CLASSES), list(MSRS_DET_CLASSES)


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """Date, host, CPU/GPU, threads, load and library versions."""
    import onnxruntime
    import timm
    import torch
    import torchvision

    info = {
        'date': datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        'cpu': f'{cpu_name()} ({os.cpu_count()} logical cores, torch threads '
               f'{torch.get_num_threads()})',
        'gpu': torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none',
        'load_avg_1m': round(os.getloadavg()[0], 2),
        'python': platform.python_version(),
        'versions': f'torch {torch.__version__}, torchvision {torchvision.__version__}, '
                    f'timm {timm.__version__}, onnxruntime {onnxruntime.__version__}, '
                    f'numpy {np.__version__}',
    }
    return info


def print_header(title: str) -> dict:
    """Print the bench title and machine info; return the info."""
    info = machine()
    print(f'\n## {title}\n')
    for key, value in info.items():
        print(f'- {key}: {value}')
    print()
    return info


def stats_ms(seconds: list[float]) -> dict[str, float]:
    """p50 / p95 / mean in milliseconds."""
    ms = np.asarray(seconds) * 1e3
    return {'p50': float(np.percentile(ms, 50)), 'p95': float(np.percentile(ms, 95)),
            'mean': float(ms.mean()), 'runs': len(ms)}


def interleaved(variants: dict[str, Callable[[], object]], runs: int,
                warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each variant: ``warmup`` untimed rounds, then ``runs`` timed rounds,
    one call of every variant per round in rotating order."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(runs):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    return times


def table(header: list[str], rows: list[list[object]]) -> str:
    """A Markdown table (numbers formatted to 3 significant digits)."""
    def cell(value: object) -> str:
        return f'{value:.3g}' if isinstance(value, float) else str(value)

    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in rows]
    return '\n'.join(lines)


def default_model(input_size: tuple[int, int], seed: int = 0):
    """The default architecture: ViT-S/14 ('default' weights) + UPerNet (9) + FCOS (3), 64 ch,
    random heads. Returns (PerceptionModel, ModelSpec)."""
    import torch

    from univ_core.models.model_file import ModelSpec, build_model

    spec = ModelSpec(DEFAULT_ARCH, SEG_CLASSES, DET_CLASSES, tuple(input_size), head_channels=64)
    torch.manual_seed(seed)
    return build_model(spec, 'default').eval(), spec


def bench_model(kind: str, input_size: tuple[int, int] | None):
    """(PerceptionModel, ModelSpec) to time: 'shipped' = the default model file (what the node
    runs), at its own input size unless ``input_size`` is given; 'random' = :func:`default_model`
    (random heads) at ``input_size``."""
    if kind == 'random':
        return default_model(input_size or (336, 448))
    from dataclasses import replace

    from univ_core.models.model_file import default_model_path, load_model

    model, spec = load_model(default_model_path())
    return model.eval(), replace(spec, input_size=tuple(input_size or spec.input_size))


def predictor_settings(kind: str, device: str, score: float | None,
                       input_size: tuple[int, int]) -> dict:
    """PredictorConfig fields every variant of a predictor bench shares.

    fp32 unless a variant says otherwise ('auto' picks bf16 / int8 on CPUs that have them); the
    score cut: ``score``, else the deployment one (random heads: 0.1, which keeps a few boxes).
    """
    from univ_core.inference import PredictorConfig

    if score is None:
        score = 0.1 if kind == 'random' else PredictorConfig.score_threshold
    return dict(device=device, score_threshold=score, input_size=tuple(input_size),
                precision='fp32')


def camera_pair(seed: int = 0, hw: tuple[int, int] = (512, 640)) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic pair: (H, W, 3) uint8 RGB and (H, W) uint16 thermal (smooth blobs + noise)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    coarse = rng.random((h // 32 + 1, w // 32 + 1, 4))
    smooth = np.kron(coarse, np.ones((32, 32, 1)))[:h, :w]  # (H, W, 4) blocky low frequencies
    rgb = np.clip(smooth[..., :3] * 220 + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    thermal = (20000 + smooth[..., 3] * 8000 + rng.normal(0, 150, (h, w))).astype(np.uint16)
    return rgb, thermal


def camera_pairs(n: int, hw: tuple[int, int] = (512, 640), real: bool = True
                 ) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """``n`` pairs of (H, W, 3) uint8 RGB + (H, W) uint16 thermal, and what they are.

    ``real``: the msrs_mini evaluation pairs (real street scenes, so a trained model finds
    objects) resized to ``hw``, their 8-bit thermal scaled to 16 bit like a radiometric
    camera's, where the data folder has them; else (or not ``real``) :func:`camera_pair`.
    """
    import cv2

    from univ_core.data.evaluation_pairs import MSRS_TEST
    from univ_core.data.home import data_home
    from univ_core.data.paired import find_pairs, load_pair

    root = data_home() / 'msrs_mini'
    found = ([p for p in find_pairs(root, 'msrs') if Path(p.name).name in MSRS_TEST]
             if real and root.is_dir() else [])
    if not found:
        return [camera_pair(seed, hw) for seed in range(n)], 'synthetic blobs'
    pairs = []
    for pair in (found * n)[:n]:
        rgb, thermal = load_pair(pair)
        size = (hw[1], hw[0])
        thermal = cv2.resize(thermal, size, interpolation=cv2.INTER_LINEAR)
        pairs.append((cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR),
                      thermal.astype(np.uint16) * 257 if thermal.dtype == np.uint8 else thermal))
    return pairs, f'msrs_mini evaluation pairs {", ".join(Path(p.name).name for p in found[:n])}'


def save_json(path: Path | None, payload: dict) -> None:
    """Write the bench's numbers for run_all (skipped when ``path`` is None)."""
    if path is not None:
        Path(path).write_text(json.dumps(payload, indent=2, default=str) + '\n')


def median_ratio(base: list[float], other: list[float]) -> float:
    """Baseline median / variant median: > 1 means the variant is faster."""
    return statistics.median(base) / statistics.median(other)


def baseline_predict(predictor, rgb: np.ndarray, thermal: np.ndarray):
    """The baseline: eager fp32, the two modalities one after the other (TWO forwards), then the
    Predictor's own fusion and post-processing, so outputs compare one to one.

    Args:
        predictor: a torch-backend Predictor (fp32, not compiled).
        rgb: (H, W, 3) uint8.
        thermal: (H, W) uint16.
    """
    import torch

    threshold = predictor._threshold(scoring=False)
    candidates = predictor._candidates(threshold, fused=True)  # what predict(mode='fused') keeps
    with torch.inference_mode():
        outs = [predictor.forward(predictor.preprocess.rgb([rgb]), candidates),
                predictor.forward(predictor.preprocess.thermal([thermal]), candidates)]
        merged = {}
        if 'seg_logits' in outs[0]:
            merged['seg_logits'] = torch.cat([o['seg_logits'] for o in outs])  # (2, K, h, w)
        if 'det' in outs[0]:
            merged['det'] = outs[0]['det'] + outs[1]['det']
        return predictor._postprocess(merged, [rgb], [thermal], 'fused', '', threshold)[0]


def compare(got, want) -> dict[str, object]:
    """How a Prediction differs from the baseline's: mask pixels that differ, max relative box
    error (inf when the box counts differ), box count."""
    mask_diff = int((got.mask != want.mask).sum()) if want.mask is not None else 0
    a, b = got.detections.boxes, want.detections.boxes
    if a.shape != b.shape or list(got.detections.class_ids) != list(want.detections.class_ids):
        box_err = float('inf')
    else:
        box_err = float((np.abs(a - b) / np.maximum(np.abs(b), 1.0)).max()) if len(b) else 0.0
    return {'mask_pixels_differing': mask_diff, 'box_rel_err': box_err, 'boxes': len(b)}


def outputs_equal(diff: dict, mask_pixels: int = 0) -> bool:
    """The acceptance rule: masks identical (at most ``mask_pixels`` differ), boxes within 1e-3
    relative."""
    return diff['mask_pixels_differing'] <= mask_pixels and diff['box_rel_err'] <= 1e-3
