"""`univ autolabel` settings and the teacher -> package class table (``config/autolabel.yaml``)."""

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from univ_core.data.home import config_file, data_home
from univ_core.models.weights import file_sha256

IGNORE = 255  # mask value of pixels without a label


def models_home() -> Path:
    """Where the shared offline teacher models live (beside the data folder)."""
    return data_home().parent / 'models'


@dataclass
class AutolabelConfig:
    """How pairs are labelled (defaults: the shared NanoDet + ESPNet teachers)."""

    detector: str = ''  # detector .onnx ('' = <models>/nanodet_g416_coco.onnx; 'none' = skip)
    detector_adapter: str = 'nanodet'  # nanodet | module:factory (teachers.load_teacher)
    segmenter: str = ''  # segmenter .onnx ('' = <models>/espnet_cityscapes.onnx; 'none' = skip)
    segmenter_adapter: str = 'espnet'  # espnet | module:factory
    classes: str = str(config_file('autolabel.yaml'))  # teacher -> package class table
    box_threshold: float = 0.35  # teacher boxes scoring below are not labels
    thermal_detector: bool = True  # also run the detector on the thermal image (merged)
    merge_iou: float = 0.55  # RGB- and thermal-teacher boxes of a class overlapping more: one
    seg_confidence: float = 0.5  # teacher pixels less confident than this are ignored (255)
    night_luminance: float = 50.0  # mean RGB luma (0-255) below it: night, no masks
    # top third's mean luma / the frame's below it: night too (a dark sky over lit streets;
    # auto-exposed night frames can be bright overall)
    night_sky_ratio: float = 0.97
    real_labels: bool = True  # real boxes of the layout (MSRS txt, LLVIP xml) win
    overlays: int = 6  # overlay PNGs, spread over the pairs
    threads: int = 0  # onnxruntime threads per teacher (0: its default)

    def __post_init__(self) -> None:
        if not 0 <= self.box_threshold <= 1 or not 0 <= self.seg_confidence <= 1:
            raise ValueError('autolabel: box_threshold and seg_confidence must be in [0, 1]')
        if not 0 < self.merge_iou <= 1:
            raise ValueError(f'autolabel: merge_iou must be in (0, 1], got {self.merge_iou}')

    def detector_path(self) -> Path | None:
        """The detector file, or None when detection is switched off."""
        if self.detector == 'none':
            return None
        return Path(self.detector) if self.detector else models_home() / 'nanodet_g416_coco.onnx'

    def segmenter_path(self) -> Path | None:
        """The segmenter file, or None when segmentation is switched off."""
        if self.segmenter == 'none':
            return None
        return (Path(self.segmenter) if self.segmenter
                else models_home() / 'espnet_cityscapes.onnx')

    def teacher_sha256(self) -> list[str]:
        """sha256 of the teacher files in use (detector first): labels of other teachers differ."""
        paths = [p for p in (self.detector_path(), self.segmenter_path()) if p is not None]
        return [file_sha256(p) for p in paths]

    def label_identity(self) -> dict:
        """What decides the labels: settings, teacher files' sha256, the class table's content.

        Hashes and contents, not paths: other teachers or classes are never reused, and a moved
        checkout still reuses its labels. ``threads`` changes no label and is left out.
        """
        config = {k: v for k, v in asdict(self).items()
                  if k not in ('threads', 'classes')}
        return {'autolabel': config, 'teachers': self.teacher_sha256(),
                'classes': asdict(ClassTable.load(self.classes))}


@dataclass
class ClassTable:
    """Package classes and the teacher-class -> package-class maps."""

    det_classes: list[str]  # package detection classes (label ids index them)
    det_from: dict[str, str]  # teacher detection class name -> package class name
    seg_classes: list[str]  # package segmentation classes
    seg_palette: list[list[int]] | None  # RGB per segmentation class
    seg_from: dict[str, str]  # teacher segmentation class name -> package class name

    @classmethod
    def load(cls, path: str | Path) -> 'ClassTable':
        """Read ``config/autolabel.yaml``; unknown target classes are errors."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f'autolabel class table {path} not found')
        data = yaml.safe_load(path.read_text()) or {}
        try:
            det, seg = data['detection'], data['segmentation']
            table = cls(list(det['classes']), dict(det['from_teacher']), list(seg['classes']),
                        seg.get('palette'), dict(seg['from_teacher']))
        except (KeyError, TypeError) as err:
            raise ValueError(f'{path}: expected detection/segmentation with classes and '
                             f'from_teacher ({err!r})') from err
        for kind, classes, mapping in (('detection', table.det_classes, table.det_from),
                                       ('segmentation', table.seg_classes, table.seg_from)):
            unknown = sorted(set(mapping.values()) - set(classes))
            if unknown:
                raise ValueError(f'{path}: {kind}.from_teacher maps to {unknown}, not in '
                                 f'{kind}.classes {classes}')
        return table

    def det_lookup(self, teacher_classes: list[str]) -> np.ndarray:
        """(T,) int64: package class id per teacher class id, -1 = dropped."""
        return np.array([self.det_classes.index(self.det_from[c]) if c in self.det_from
                         else -1 for c in teacher_classes], np.int64)

    def seg_lookup(self, teacher_classes: list[str]) -> np.ndarray:
        """(256,) uint8: package class id per teacher class id, IGNORE for the rest."""
        lut = np.full(256, IGNORE, np.uint8)
        for i, c in enumerate(teacher_classes):
            if c in self.seg_from:
                lut[i] = self.seg_classes.index(self.seg_from[c])
        return lut
