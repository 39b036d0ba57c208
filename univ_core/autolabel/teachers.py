"""Offline ONNX teachers that label RGB frames: a box detector and a semantic segmenter.

A teacher is any object with this interface (numpy in, numpy out; the two built-in adapters
below implement it for the models in ``../shared/models``; write your own for another model and
pass it as ``module:factory`` — see :func:`load_teacher`):

Detector::

    name: str; sha256: str; classes: list[str]           # the teacher's own class names
    detect(image: (H, W, 3) uint8 RGB) -> (boxes (K, 4) float32 xyxy px,
                                           scores (K,) float32, class ids (K,) int64)

Segmenter::

    name: str; sha256: str; classes: list[str]
    segment(image: (H, W, 3) uint8 RGB) -> (ids (H, W) uint8, confidence (H, W) float32)

Teacher class names are mapped to the package's classes by the table in
``config/autolabel.yaml`` (:mod:`univ_core.autolabel.config`).
"""

import importlib
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torchvision.ops import batched_nms

from univ_core.models.weights import file_sha256


def _session(path: Path, threads: int):
    import onnxruntime as ort

    if not Path(path).is_file():
        raise FileNotFoundError(f'teacher model {path} not found (the shared models live in '
                                '../shared/models; pass --detector / --segmenter PATH)')
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])


def _metadata_classes(session: Any, path: Path) -> list[str]:
    meta = session.get_modelmeta().custom_metadata_map
    if 'classes' not in meta:
        raise ValueError(f'{path}: no "classes" in the ONNX metadata')
    classes = json.loads(meta['classes'])
    if isinstance(classes, dict):  # {"0": "person", ...}
        classes = [classes[k] for k in sorted(classes, key=int)]
    return [str(c) for c in classes]


class NanoDetTeacher:
    """NanoDet-g 416 (COCO-80) with its GFL decode in the graph; class-wise NMS here.

    Args:
        path: the .onnx file (``nanodet_g416_coco.onnx``).
        score_threshold: candidates below are dropped before NMS (the model's README: 0.05).
        nms_iou: class-wise NMS IoU (the README's 0.5).
        max_detections: most boxes kept per image.
        threads: onnxruntime intra-op threads (0: its default).
    """

    size = 416  # fixed input side

    def __init__(self, path: Path, score_threshold: float = 0.05, nms_iou: float = 0.5,
                 max_detections: int = 100, threads: int = 0) -> None:
        self.path = Path(path)
        self.session = _session(self.path, threads)
        self.classes = _metadata_classes(self.session, self.path)
        self.name, self.sha256 = f'nanodet:{self.path.name}', file_sha256(self.path)
        self.score_threshold, self.nms_iou = score_threshold, nms_iou
        self.max_detections = max_detections

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes of one (H, W, 3) uint8 RGB image in its pixels (see the module docstring)."""
        h, w = image.shape[:2]
        scale = self.size / max(h, w)  # keep the aspect ratio, pad right/bottom (best AP)
        rh, rw = max(1, round(h * scale)), max(1, round(w * scale))
        canvas = np.zeros((self.size, self.size, 3), np.uint8)
        canvas[:rh, :rw] = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA)
        x = canvas.transpose(2, 0, 1)[None].astype(np.float32)  # (1, 3, 416, 416) RGB 0..255
        boxes, scores = self.session.run(None, {'image': x})  # (P, 4) 416 px, (P, 80)
        point, cls = np.nonzero(scores > self.score_threshold)
        b = torch.from_numpy(boxes[point] / scale)
        s = torch.from_numpy(scores[point, cls])
        c = torch.from_numpy(cls.astype(np.int64))
        keep = batched_nms(b, s, c, self.nms_iou)[: self.max_detections]
        # Not clipped to the image: the graph clips to its 416 px canvas, i.e. to max(h, w), so
        # a box can end up to ~12 px below a landscape frame, and its YOLO row may pass 1.
        # Readers clip (univ_core.data.label_files). Clipping here rewrote 23 label rows of the
        # training pairs (the same boxes once read and clipped, up to the 6-decimal rounding),
        # and the default model retrained on them scored msrs_mini thermal 0.101 instead of
        # 0.259 (docs/experiments.md, "One seed"): kept as the shipped model's labels were made, so
        # `univ train-default` rebuilds that file.
        return b[keep].numpy().astype(np.float32), s[keep].numpy(), c[keep].numpy()


class EspnetTeacher:
    """ESPNet (Cityscapes trainIds 0-18, 19 = void) at 1024 x 512, labels resized back.

    Args:
        path: the .onnx file (``espnet_cityscapes.onnx``).
        size: (W, H) the frame is resized to (multiples of 8; trained at 1024 x 512).
        threads: onnxruntime intra-op threads (0: its default).
    """

    def __init__(self, path: Path, size: tuple[int, int] = (1024, 512), threads: int = 0) -> None:
        self.path = Path(path)
        self.session = _session(self.path, threads)
        self.classes = _metadata_classes(self.session, self.path)
        self.name, self.sha256 = f'espnet:{self.path.name}', file_sha256(self.path)
        self.size = tuple(size)

    def segment(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H, W) uint8 teacher class ids and (H, W) float32 softmax confidence."""
        h, w = image.shape[:2]
        x = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA if w > self.size[0]
                       else cv2.INTER_LINEAR)
        x = x.transpose(2, 0, 1)[None].astype(np.float32)  # (1, 3, h', w') RGB 0..255
        logits, _ = self.session.run(None, {'image': x})  # (1, C, h', w')
        probs = torch.from_numpy(logits[0]).softmax(0)  # (C, h', w')
        confidence, ids = probs.max(0)
        ids = cv2.resize(ids.numpy().astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        confidence = cv2.resize(confidence.numpy(), (w, h), interpolation=cv2.INTER_LINEAR)
        return ids, confidence


BUILT_IN = {'nanodet': NanoDetTeacher, 'espnet': EspnetTeacher}


def load_teacher(spec: str, path: Path, **kwargs: Any) -> Any:
    """A teacher from an adapter name and a model path.

    Args:
        spec: 'nanodet' | 'espnet' (built in) or 'package.module:factory', a callable taking
            ``(path, **kwargs)`` and returning an object with the interface of the module
            docstring.
        path: the model file.
        **kwargs: adapter settings (thresholds, threads).
    """
    if spec in BUILT_IN:
        return BUILT_IN[spec](path, **kwargs)
    module, sep, attr = spec.partition(':')
    if not sep:
        raise ValueError(f'teacher adapter {spec!r}: expected one of {sorted(BUILT_IN)} or '
                         "'module:factory'")
    factory = getattr(importlib.import_module(module), attr)
    return factory(path, **kwargs)
