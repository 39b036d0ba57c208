"""Writes one input's labels (YOLO txt, PNG masks), its provenance JSON and its pictures.

Everything goes to ``.<out name>.partial.tmp`` beside ``out`` first (a bag's decoded images
too) and is renamed to ``out`` when the input is done: an interrupted run leaves no
half-labelled folder that looks complete, and an existing ``out`` is only replaced with
``force``. The staging name follows the fleet protocol (:mod:`univ_core.fleet.job`), so a fleet
run sweeps what a killed worker left.
"""

import contextlib
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from univ_core.autolabel.config import IGNORE
from univ_core.autolabel.labeller import Labeller, PairLabels
from univ_core.autolabel.sources import InputPair
from univ_core.eval.metrics import DetectionMeter
from univ_core.inference.overlay import colorize, draw_detections, to_rgb8
from univ_core.train.checkpoint import atomic_write, write_json

MODALITY_DIRS = {'rgb': 'visible', 'thermal': 'infrared'}  # MSRS-detection's folder names


def input_tag(source: str | Path) -> str:
    """The output subfolder name of an input: its file or folder name without suffix."""
    path = Path(source).resolve()
    return path.stem if path.is_file() else path.name


def yolo_lines(boxes: np.ndarray, labels: np.ndarray, width: int, height: int) -> str:
    """(K, 4) xyxy pixels -> YOLO ``class cx cy w h`` lines, normalised to the image."""
    rows = []
    for (x1, y1, x2, y2), c in zip(boxes.tolist(), labels.tolist(), strict=True):
        rows.append(f'{c} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} '
                    f'{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}')
    return '\n'.join(rows) + ('\n' if rows else '')


def _real_in_package(real, det_classes: list[str]) -> tuple:
    """Real boxes mapped to package class ids by name, and the package ids the set covers.

    Classes the package lacks are dropped.
    """
    index = {c.lower(): i for i, c in enumerate(det_classes)}
    mapped = []
    for boxes, labels in (real.rgb, real.ir):
        ids = np.array([index.get(real.classes[k].lower(), -1) for k in labels], np.int64)
        keep = ids >= 0
        mapped.append((boxes[keep].astype(np.float32), ids[keep]))
    covered = [index[c.lower()] for c in real.classes if c.lower() in index]
    return mapped, np.array(covered, np.int64)


def _with_real(labels, key: str, boxes: np.ndarray, ids: np.ndarray,
               covered: np.ndarray) -> None:
    """Replace the teacher's boxes of the ``covered`` classes by the real ones, in place.

    A dataset labelling only persons (LLVIP) says nothing about its cars: their teacher boxes
    stay (score kept), so they are not trained as background.
    """
    teacher = ~np.isin(getattr(labels, f'labels_{key}'), covered)
    for field, real in (('boxes', boxes), ('labels', ids), ('scores', np.ones(len(ids)))):
        kept = getattr(labels, f'{field}_{key}')[teacher]
        setattr(labels, f'{field}_{key}', np.concatenate([real, kept.astype(real.dtype)]))


class LabelWriter:
    """Accumulates one input's pairs into ``out`` (see the module docstring)."""

    def __init__(self, out: Path, labeller: Labeller, force: bool = False) -> None:
        self.out, self.labeller = Path(out), labeller
        if self.out.exists() and not force:
            raise ValueError(f'{self.out} exists; pass --force to replace it')
        self.staging = self.out.with_name(f'.{self.out.name}.partial.tmp')
        self._new_parent = not self.out.parent.exists()  # made by staging: discard removes it
        # Made by the first file written into it: an input that fails to open leaves nothing.
        shutil.rmtree(self.staging, ignore_errors=True)
        self.table, self.config = labeller.table, labeller.config
        self.pairs: list[dict] = []
        self.counts = {m: Counter() for m in MODALITY_DIRS}
        self.pixels = np.zeros(len(self.table.seg_classes) + 1, np.int64)  # last: ignored
        self.quality = {k: DetectionMeter(self.table.det_classes)
                        for k in ('rgb', 'thermal_from_rgb', 'thermal_merged')}
        self.quality_pairs = 0
        self.shown: list[tuple[str, np.ndarray, np.ndarray, PairLabels]] = []

    def add(self, item: InputPair) -> None:
        """Label one pair and write its files."""
        rgb, thermal = item.load()
        labels = self.labeller.label(rgb, thermal)
        h, w = thermal.shape
        if item.real is not None and self.config.real_labels:
            ((rb, rl), (ib, il)), covered = _real_in_package(item.real(w, h),
                                                              self.table.det_classes)
            self._score_teacher(labels.teacher, rb, rl, ib, il)
            _with_real(labels, 'rgb', rb, rl, covered)
            _with_real(labels, 'ir', ib, il, covered)
            labels.boxes_from = 'real'
        name = item.pair.name
        for modality, folder in MODALITY_DIRS.items():
            key = 'rgb' if modality == 'rgb' else 'ir'
            boxes, ids = getattr(labels, f'boxes_{key}'), getattr(labels, f'labels_{key}')
            path = self.staging / 'labels' / folder / f'{name}.txt'
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yolo_lines(boxes, ids, w, h))
            self.counts[modality].update(self.table.det_classes[k] for k in ids.tolist())
        if labels.mask is not None:
            path = self.staging / 'masks' / f'{name}.png'
            path.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(path), labels.mask):
                raise OSError(f'cannot write {path}')
            ids = np.where(labels.mask == IGNORE, len(self.pixels) - 1, labels.mask)
            self.pixels += np.bincount(ids.reshape(-1), minlength=len(self.pixels))
        self.pairs.append({'name': name, 'rgb': self._final(item.pair.rgb),
                           'ir': self._final(item.pair.ir),
                           'boxes_from': labels.boxes_from, 'night': labels.night,
                           'mask': labels.mask is not None})
        if len(self.shown) < self.config.overlays and len(self.pairs) % 7 == 1:
            self.shown.append((name, rgb, thermal, labels))

    def _final(self, path: Path) -> str:
        """``path`` as pairs.json stores it.

        A bag's staged images relative to the folder (it may move), a dataset's images
        absolute (training may run from anywhere).
        """
        path = Path(path)
        return str(path.relative_to(self.staging) if path.is_relative_to(self.staging)
                   else path.resolve())

    def discard(self) -> None:
        """Drop the staged files of an input that failed: they are no result."""
        shutil.rmtree(self.staging, ignore_errors=True)
        if self._new_parent:
            with contextlib.suppress(OSError):  # not empty: another input's result is in it
                self.out.parent.rmdir()

    def _score_teacher(self, teacher: dict, rb, rl, ib, il) -> None:
        """Teacher boxes (before the cut) against the real ones: how good the labels are."""
        if not teacher:
            return
        self.quality_pairs += 1
        as_pred = lambda b, s, c: [{'boxes': b, 'scores': s, 'labels': c}]  # noqa: E731
        self.quality['rgb'].update(as_pred(*teacher['rgb']), [{'boxes': rb, 'labels': rl}])
        self.quality['thermal_from_rgb'].update(as_pred(*teacher['rgb']),
                                                [{'boxes': ib, 'labels': il}])
        if 'merged' in teacher:
            self.quality['thermal_merged'].update(as_pred(*teacher['merged']),
                                                  [{'boxes': ib, 'labels': il}])

    def finish(self, source: str | Path, seconds: float, damage: str | None = None) -> dict:
        """Write pairs.json, provenance.json and the pictures; move the folder into place.

        ``damage``: what stopped reading a damaged bag (its ``provenance.json`` says so).
        """
        summary = self.provenance(source, seconds) | {'damage': damage}
        write_json(self.staging / 'pairs.json', {'pairs': self.pairs})
        write_json(self.staging / 'provenance.json', summary)
        self._pictures()
        if self.out.exists():
            shutil.rmtree(self.out)
        self.staging.rename(self.out)
        return summary

    def provenance(self, source: str | Path, seconds: float) -> dict:
        """What made these labels, how many there are, and how good they measured."""
        lab, cfg = self.labeller, self.config
        teachers = [{'role': role, 'name': t.name, 'sha256': t.sha256, 'classes': t.classes}
                    for role, t in (('detector', lab.detector), ('segmenter', lab.segmenter))
                    if t is not None]
        quality = None
        if self.quality_pairs:
            quality = {'pairs_with_real_labels': self.quality_pairs,
                       'ap50': {k: m.compute()['ap50'] | {'mean': m.compute()['map50']}
                                for k, m in self.quality.items()}}
        seg_names = [*self.table.seg_classes, 'ignored']
        return {
            'input': str(source), 'pairs': len(self.pairs), 'seconds': round(seconds, 1),
            'night_pairs': sum(p['night'] for p in self.pairs),
            'real_label_pairs': sum(p['boxes_from'] == 'real' for p in self.pairs),
            'teachers': teachers,
            'settings': {k: getattr(cfg, k) for k in (
                'box_threshold', 'thermal_detector', 'merge_iou', 'seg_confidence',
                'night_luminance', 'night_sky_ratio', 'real_labels')},
            'classes': {'detection': self.table.det_classes,
                        'segmentation': self.table.seg_classes,
                        'palette': self.table.seg_palette,
                        'detection_from_teacher': self.table.det_from,
                        'segmentation_from_teacher': self.table.seg_from},
            'counts': {m: {c: self.counts[m][c] for c in self.table.det_classes}
                       for m in MODALITY_DIRS},
            'mask_pixel_share': {n: round(float(v) / max(self.pixels.sum(), 1), 4)
                                 for n, v in zip(seg_names, self.pixels, strict=True)},
            'teacher_quality_vs_real': quality,
        }

    def _pictures(self) -> None:
        """summary.png (label counts) and overlays/ (boxes and masks on both images)."""
        import matplotlib

        matplotlib.use('Agg')
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        classes = self.table.det_classes
        x = np.arange(len(classes))
        for k, modality in enumerate(MODALITY_DIRS):
            axes[0].bar(x + 0.4 * k, [self.counts[modality][c] for c in classes], 0.4,
                        label=modality)
        axes[0].set_xticks(x + 0.2, classes)
        axes[0].set_title(f'boxes ({len(self.pairs)} pairs)')
        axes[0].legend()
        names = [*self.table.seg_classes, 'ignored']
        axes[1].barh(names, self.pixels / max(self.pixels.sum(), 1))
        axes[1].set_title('mask pixel share')
        atomic_write(self.staging / 'summary.png',
                     lambda tmp: fig.savefig(tmp, format='png', dpi=90, bbox_inches='tight'))
        plt.close(fig)
        palette = np.asarray(self.table.seg_palette or [], np.uint8).reshape(-1, 3)
        for name, rgb, thermal, labels in self.shown:
            self._overlay(name, rgb, thermal, labels, palette)

    def _overlay(self, name: str, rgb: np.ndarray, thermal: np.ndarray, labels: PairLabels,
                 palette: np.ndarray) -> None:
        classes = self.table.det_classes
        left = rgb
        if labels.mask is not None and len(palette):
            left = colorize(labels.mask, palette, rgb)  # ignored pixels (255) stay uncoloured
        left = draw_detections(left, labels.boxes_rgb, [classes[k] for k in labels.labels_rgb],
                               labels.scores_rgb)
        right = draw_detections(to_rgb8(thermal), labels.boxes_ir,
                                [classes[k] for k in labels.labels_ir], labels.scores_ir)
        path = self.staging / 'overlays' / f'{name.replace("/", "_")}.png'
        path.parent.mkdir(parents=True, exist_ok=True)
        canvas = np.concatenate([left, right], axis=1)[..., ::-1]  # RGB -> BGR for OpenCV
        if not cv2.imwrite(str(path), np.ascontiguousarray(canvas)):
            raise OSError(f'cannot write {path}')

