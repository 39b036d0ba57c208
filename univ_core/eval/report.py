"""Evaluation reports: JSON for machines, a markdown table and PNGs for people."""

from pathlib import Path

import cv2
import numpy as np

from univ_core.inference.overlay import colorize, draw_detections
from univ_core.train.checkpoint import atomic_write, write_json


def markdown_table(task: str, results: dict) -> str:
    """Per-modality summary plus per-class rows (AP50 or IoU)."""
    per_class = 'ap50' if task == 'det' else 'iou'
    heads = ['mAP50', 'mAP@[.5:.95]'] if task == 'det' else ['mIoU', 'pixel acc.']
    keys = ['map50', 'map'] if task == 'det' else ['miou', 'pixel_accuracy']
    modalities = list(results)
    lines = ['| metric | ' + ' | '.join(modalities) + ' |', '|---' * (len(modalities) + 1) + '|']
    for head, key in zip(heads, keys, strict=True):
        lines.append(f'| {head} | ' + ' | '.join(f'{results[m][key]:.4f}' for m in modalities)
                     + ' |')
    for name in results[modalities[0]][per_class]:
        lines.append(f'| {per_class} {name} | ' + ' | '.join(
            f'{results[m][per_class][name]:.4f}' for m in modalities) + ' |')
    return '\n'.join(lines) + '\n'


def class_bars(path: Path, task: str, results: dict) -> None:
    """Per-class AP50 / IoU bars, one colour per modality."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    key = 'ap50' if task == 'det' else 'iou'
    names = list(next(iter(results.values()))[key])
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names)), 3.2))
    width = 0.8 / len(results)
    for i, (modality, metrics) in enumerate(results.items()):
        values = np.array([metrics[key][n] for n in names], np.float64)
        # NaN (no such class in the truth) gets no bar, unlike a class missed entirely (0)
        ax.bar(np.arange(len(names)) + i * width, np.nan_to_num(values), width,
               label=modality)
    absent = {n for n in names if all(np.isnan(m[key][n]) for m in results.values())}
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2,
                  [f'{n}\n(n/a)' if n in absent else n for n in names], rotation=30)
    ax.set_ylabel(key.upper())
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format='png', dpi=110))
    plt.close(fig)


def overlay_image(sample: dict, modality: str, pred, predictor) -> np.ndarray:
    """The prediction drawn over the image it was made on (fused: over RGB)."""
    image = sample['thermal'] if modality == 'ir' else sample['rgb']
    if pred.mask is not None:
        image = colorize(pred.mask, predictor.palette, image)
    det = pred.detections
    return draw_detections(image, det.boxes, det.class_names, det.scores)


def write_report(out: Path, task: str, results: dict, meta: dict, shown: list,
                 predictor) -> None:
    """report.json, report.md, per_class.png and overlay_<i>.png under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / 'report.json', {'task': task, **meta, 'results': results})
    body = f'# UNIV {task} evaluation\n\n' + ''.join(f'- {k}: {v}\n' for k, v in meta.items())
    atomic_write(out / 'report.md', lambda tmp: tmp.write_text(
        body + '\n' + markdown_table(task, results)))
    class_bars(out / 'per_class.png', task, results)
    for i, (sample, modality, pred) in enumerate(shown):
        picture = overlay_image(sample, modality, pred, predictor)[..., ::-1]  # RGB -> BGR
        png = cv2.imencode('.png', picture)[1].tobytes()
        atomic_write(out / f'overlay_{i}_{modality}.png', lambda tmp, b=png: tmp.write_bytes(b))
