"""`Predictor`: numpy RGB and/or thermal in, numpy masks and detections out.

One object wraps a :class:`~univ_core.models.perception.PerceptionModel`; the ROS node, the bag
replay and the evaluation all call it, so every consumer sees the same preprocessing, fusion and
post-processing. Both modalities go through the backbone in ONE batched forward.

Output frame: ``rgb`` and ``fused`` outputs are in the RGB image's pixels (the reference camera);
``thermal`` outputs are in the thermal image's pixels.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from univ_core.inference.box_fusion import fuse_boxes, suppress_duplicates
from univ_core.inference.config import INT8_NEEDS, PredictorConfig
from univ_core.inference.geometry import as_homography, transform_boxes, warp, warp_grid
from univ_core.inference.overlay import default_palette
from univ_core.inference.precision import resolve_precision
from univ_core.inference.preprocess import Preprocessor
from univ_core.inference.validation import check_rgb, check_thermal

MODES = ('rgb', 'thermal', 'fused')


@dataclass
class Detections:
    """Boxes in the output frame's pixels, best score first."""

    boxes: np.ndarray  # (K, 4) float32 xyxy
    class_ids: np.ndarray  # (K,) int64
    scores: np.ndarray  # (K,) float32
    class_names: list[str]  # K names

    def above(self, threshold: float) -> 'Detections':
        """The detections scoring >= ``threshold`` (e.g. the deployment cut of a scoring run)."""
        keep = np.flatnonzero(self.scores >= threshold)
        return Detections(self.boxes[keep], self.class_ids[keep], self.scores[keep],
                          [self.class_names[i] for i in keep])


@dataclass
class Prediction:
    """What one synchronised pair (or one image) produced."""

    mask: np.ndarray | None  # (H, W) uint8 class ids (uint16 beyond 254 classes); None: no seg
    confidence: np.ndarray | None  # (H, W) float32 probability of the chosen class
    detections: Detections
    mode: str  # the mode actually run: rgb | thermal | fused
    note: str = ''  # why the mode differs from the one asked for (a missing modality)


class Predictor:
    """Numpy in, numpy out; the model, device and constants live inside.

    Args:
        model: a PerceptionModel (``forward(images) -> {'seg_logits', 'det'}``).
        seg_classes: names of the segmentation classes (None: the model has no seg head).
        det_classes: names of the detection classes (None: no detection head).
        input_size: (H, W) the images are resized to (multiples of the patch size).
        config: run-time settings.
        palette: (C, 3) RGB per seg class for overlays (None: :func:`default_palette`).
    """

    def __init__(self, model: torch.nn.Module, seg_classes: list[str] | None,
                 det_classes: list[str] | None, input_size: tuple[int, int],
                 config: PredictorConfig | None = None,
                 palette: list[list[int]] | None = None) -> None:
        self.config = config or PredictorConfig()
        self.palette = (np.asarray(palette, np.uint8) if palette is not None
                        else default_palette(len(seg_classes or [])))
        device = self.config.device
        self.device = torch.device('cuda' if device == 'auto' and torch.cuda.is_available()
                                   else 'cpu' if device == 'auto' else device)
        if self.device.type == 'cuda' and (self.device.index or 0) >= torch.cuda.device_count():
            raise ValueError(f'device {device!r}: torch sees {torch.cuda.device_count()} CUDA '
                             f'device(s) here (torch {torch.__version__}, CUDA build '
                             f'{torch.version.cuda}); use device auto or cpu')
        self.input_size = tuple(self.config.input_size or input_size)
        self.seg_classes, self.det_classes = seg_classes, det_classes
        # 'auto' resolved for this device and CPU (precision.py); what actually runs
        self.precision = resolve_precision(self.config.precision, self.config.backend,
                                           self.device.type)
        if self.config.num_threads:
            torch.set_num_threads(self.config.num_threads)
        self.model = self._prepare(model)
        self._dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(self.precision)
        self.preprocess = Preprocessor(self.input_size, self.config.thermal_norm, self.device)
        self._h = (None if self.config.homography is None else
                   as_homography(self.config.homography))
        self._grids: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        # Per-frame constants made once: the homography and the box scale per image size.
        self._h_device = (None if self._h is None else
                          torch.as_tensor(self._h, dtype=torch.float32, device=self.device))
        self._box_scales: dict[tuple[int, int], torch.Tensor] = {}

    # ---------------------------------------------------------------- public API
    def predict(self, rgb: np.ndarray | None = None, thermal: np.ndarray | None = None,
                mode: str = 'fused', scoring: bool = False) -> Prediction:
        """One pair (or one image). ``fused`` with a modality missing falls back to the other.

        ``scoring``: return detections down to ``eval_score_threshold`` (for mAP) instead of
        the deployment ``score_threshold``; ``detections.above(score_threshold)`` then gives
        exactly what a deployment call returns.
        """
        mode, note = self._resolve_mode(mode, rgb is not None, thermal is not None)
        return self.predict_batch([rgb] if rgb is not None else None,
                                  [thermal] if thermal is not None else None, mode, note,
                                  scoring)[0]

    def predict_batch(self, rgbs: list[np.ndarray] | None, thermals: list[np.ndarray] | None,
                      mode: str = 'fused', note: str = '',
                      scoring: bool = False) -> list[Prediction]:
        """Several pairs of equal sizes in ONE forward (offline replay throughput)."""
        if mode not in MODES:
            raise ValueError(f'mode: expected one of {MODES}, got {mode!r}')
        rgbs = ([check_rgb(x, f'rgb[{i}]') for i, x in enumerate(rgbs or [])]
                if mode != 'thermal' else [])
        thermals = ([check_thermal(x, f'thermal[{i}]') for i, x in enumerate(thermals or [])]
                    if mode != 'rgb' else [])
        n = max(len(rgbs), len(thermals))
        if n == 0 or (mode == 'fused' and len(rgbs) != len(thermals)):
            raise ValueError(
                f'mode {mode}: got {len(rgbs)} rgb and {len(thermals)} thermal images')
        self._check_sizes(rgbs, thermals, mode)
        batch = [self.preprocess.rgb(rgbs)] if rgbs else []
        batch += [self.preprocess.thermal(thermals)] if thermals else []
        threshold = self._threshold(scoring)
        with torch.inference_mode():
            out = self.forward(torch.cat(batch), self._candidates(threshold, mode == 'fused'))
            return self._postprocess(out, rgbs, thermals, mode, note, threshold)

    def predict_modes(self, rgb: np.ndarray, thermal: np.ndarray,
                      modes: tuple[str, ...] = MODES,
                      scoring: bool = False) -> dict[str, Prediction]:
        """Several modes of one pair from ONE forward of its two images (evaluation, replay).

        Equal to ``predict(rgb, thermal, mode, scoring)`` per mode, at the cost of one call.
        """
        unknown = set(modes) - set(MODES)
        if unknown:
            raise ValueError(f'modes: expected some of {MODES}, got {sorted(unknown)}')
        rgbs, thermals = [check_rgb(rgb, 'rgb')], [check_thermal(thermal, 'thermal')]
        if 'fused' in modes:
            self._check_sizes(rgbs, thermals, 'fused')
        threshold = self._threshold(scoring)
        rows = {'rgb': slice(0, 1), 'thermal': slice(1, 2), 'fused': slice(0, 2)}
        with torch.inference_mode():
            out = self.forward(torch.cat([self.preprocess.rgb(rgbs),
                                          self.preprocess.thermal(thermals)]),
                               self._candidates(threshold, 'fused' in modes))
            return {mode: self._postprocess({k: v[rows[mode]] for k, v in out.items()},
                                            rgbs if mode != 'thermal' else [],
                                            thermals if mode != 'rgb' else [], mode, '',
                                            threshold)[0] for mode in modes}

    def _threshold(self, scoring: bool) -> float:
        """The score cut of a call: deployment, or the eval one when scoring (the lower)."""
        if scoring:  # a deployment cut below the eval one (0: keep all) keeps its boxes too
            return min(self.config.score_threshold, self.config.eval_score_threshold)
        return self.config.score_threshold

    def _candidates(self, threshold: float, fused: bool) -> float:
        """The model's own cut: fusion sees every candidate down to the eval threshold.

        Two weak boxes of one object can fuse above the deployment cut, and the deployment
        output must equal the scoring output cut there, so fused calls always fuse the same
        candidates and cut afterwards (single-camera cuts commute with NMS).
        """
        return min(threshold, self.config.eval_score_threshold) if fused else threshold

    def forward(self, images: torch.Tensor, score_threshold: float | None = None) -> dict:
        """The model on a preprocessed batch: images (B, 3, h, w) float32 on the device."""
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self._dtype or torch.float32,
                            enabled=self._dtype is not None):
            return self.model(images, score_thresh=(self.config.score_threshold
                                                    if score_threshold is None
                                                    else score_threshold),
                              nms_iou=self.config.nms_iou,
                              max_detections=self.config.max_detections)

    def warmup(self, rgb_hw: tuple[int, int] = (512, 640), runs: int = 2) -> float:
        """Run dummy pairs (compiles/tunes kernels); returns the seconds it took."""
        import time

        start = time.perf_counter()
        rgb = np.zeros((*rgb_hw, 3), np.uint8)
        thermal = np.zeros(rgb_hw, np.uint16)
        for _ in range(runs):
            self.predict(rgb, thermal, 'fused')
        return time.perf_counter() - start

    # ---------------------------------------------------------------- internals
    def _prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model on the device, eval; as onnxruntime graph, channels-last or compiled."""
        if self.config.backend == 'onnxruntime':
            from univ_core.inference.onnx_backend import as_onnx_model

            if self.precision == 'int8' and self.device.type != 'cpu':  # device 'auto'
                raise ValueError(f'{INT8_NEEDS} (device {self.device})')

            return as_onnx_model(model, self.input_size, self.device,
                                 int8=self.precision == 'int8',
                                 num_threads=self.config.num_threads).eval()
        model = model.to(self.device).eval()
        if self.config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return torch.compile(model, dynamic=False) if self.config.compile else model

    @staticmethod
    def _resolve_mode(mode: str, has_rgb: bool, has_thermal: bool) -> tuple[str, str]:
        if mode not in MODES:
            raise ValueError(f'mode: expected one of {MODES}, got {mode!r}')
        if mode == 'fused' and has_rgb != has_thermal:
            alone = 'rgb' if has_rgb else 'thermal'
            missing = 'thermal' if has_rgb else 'rgb'
            return alone, f'fused requested but {missing} missing: {alone} only'
        if (mode == 'rgb' and not has_rgb) or (mode == 'thermal' and not has_thermal) or not (
                has_rgb or has_thermal):
            raise ValueError(f'mode {mode}: the {mode if mode != "fused" else "rgb and thermal"} '
                             'image is missing')
        return mode, ''

    def _check_sizes(self, rgbs: list, thermals: list, mode: str) -> None:
        if len({x.shape[:2] for x in rgbs}) > 1 or len({x.shape for x in thermals}) > 1:
            raise ValueError('predict_batch: all images of one modality must share one size')
        if mode == 'fused' and self._h is None and rgbs[0].shape[:2] != thermals[0].shape:
            raise ValueError(
                f'rgb {rgbs[0].shape[1]}x{rgbs[0].shape[0]} and thermal {thermals[0].shape[1]}x'
                f'{thermals[0].shape[0]} differ: pixel-aligned fusion needs equal sizes '
                'or a homography (PredictorConfig.homography)')

    def _postprocess(self, out: dict, rgbs: list, thermals: list, mode: str, note: str,
                     threshold: float) -> list[Prediction]:
        """Split the batch back into pairs, fuse, map to the output frame; ONE copy to host."""
        n = max(len(rgbs), len(thermals))
        ref_hw = rgbs[0].shape[:2] if rgbs else thermals[0].shape
        # Per batch row: its original size (pixels) and whether it is thermal.
        rows = [(x.shape[:2], False) for x in rgbs] + [(x.shape[:2], True) for x in thermals]
        seg = out.get('seg_logits')
        seg = self._fuse_seg(seg, n, rows, ref_hw, mode) if seg is not None else []
        det = out.get('det')
        per_row = [self._image_boxes(det, j, rows, mode) for j in range(len(rows))] if det else []
        host = _to_host([*seg, *(t for row in per_row for t in row)])  # masks, confs, then boxes
        masks, confs = (host[0], host[1]) if seg else ([None] * n, [None] * n)
        if seg and masks.dtype != np.uint8:  # beyond 254 classes: 65535 = unlabeled
            masks = masks.astype(np.uint16)
        boxes = host[len(seg):]
        results = []
        for i in range(n):
            rows_i = [i, n + i] if mode == 'fused' else [i]
            dets_i = self._detections([boxes[3 * j: 3 * j + 3] for j in rows_i] if det else [],
                                      threshold)
            results.append(Prediction(masks[i], confs[i], dets_i, mode, note))
        return results

    def _image_boxes(self, det: list, j: int, rows: list,
                     mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batch row ``j``'s boxes in its camera's pixels (thermal through the homography).

        Returns:
            boxes (K, 4) float32 xyxy, scores (K,) float32, labels (K,) int64, on the device.
        """
        h, w = self.input_size
        (oh, ow), is_thermal = rows[j]
        if (oh, ow) not in self._box_scales:
            self._box_scales[(oh, ow)] = torch.tensor(
                [ow / w, oh / h, ow / w, oh / h], device=det[j]['boxes'].device)
        b = det[j]['boxes'].float() * self._box_scales[(oh, ow)]  # input px -> image px
        if is_thermal and mode == 'fused' and self._h_device is not None:
            # into the RGB frame (row 0's size); a wider thermal view sees outside it: clipped
            # here, and what lies wholly outside (now empty) dropped on the host (no sync here)
            rh, rw = rows[0][0]
            b = transform_boxes(b, self._h_device)
            b[:, 0::2].clamp_(0, rw)
            b[:, 1::2].clamp_(0, rh)
        return b, det[j]['scores'].float(), det[j]['labels']

    def _detections(self, cameras: list[list[np.ndarray]], threshold: float) -> Detections:
        """One camera's boxes, or two fused (WBF); cross-class duplicates dropped, capped.

        Args:
            cameras: per camera [boxes (K, 4), scores (K,), labels (K,)] on the host, in the
                output frame's pixels, NMS-ed by the model at a cut <= ``threshold``.
            threshold: the score cut of this call, applied after fusion.
        """
        cfg = self.config
        if not cameras:
            b, s, lab = np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, int)
        elif len(cameras) == 1:
            b, s, lab = cameras[0]
        else:
            if self._h is not None:  # thermal boxes wholly outside the RGB view: empty, dropped
                tb = cameras[1][0]
                keep = (tb[:, 2] > tb[:, 0]) & (tb[:, 3] > tb[:, 1])
                cameras = [cameras[0], [x[keep] for x in cameras[1]]]
            boxes, scores, labels = zip(*cameras, strict=True)
            scores = [w * s for w, s in zip(cfg.fusion_weights, scores, strict=True)]
            b, s, lab = fuse_boxes(boxes, scores, labels, iou=cfg.fusion_iou,
                                   rule=cfg.fusion_rule)
        cut = np.flatnonzero(s >= threshold)  # fused candidates, or a lower model cut
        b, s, lab = b[cut], s[cut], lab[cut]
        keep = suppress_duplicates(b, s, cfg.duplicate_iou)[: cfg.max_detections]
        names = [self.det_classes[k] if k < len(self.det_classes or []) else str(k)
                 for k in lab[keep].tolist()]
        return Detections(b[keep].astype(np.float32), lab[keep].astype(np.int64),
                          s[keep].astype(np.float32), names)

    def _fuse_seg(self, logits: torch.Tensor, n: int, rows: list, ref_hw: tuple,
                  mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Average the modalities' class probabilities (thermal warped if a homography is set).

        Args:
            logits: (B, C, h, w) seg logits; rows [0, n) the first modality, [n, 2n) thermal
                in fused mode.
            n: pairs (or single images) in the batch.
            rows: per batch row ((H, W) original size, is thermal).
            ref_hw: (H, W) of the output frame.
            mode: rgb | thermal | fused.

        Returns:
            masks (n, H, W) uint8 (int32 beyond 254 classes) and confidences (n, H, W) float32,
            on the device, H x W = ``ref_hw``.
        """
        probs = logits.float().softmax(1)  # (B, C, h, w)
        p = probs[:n]  # (n, C, h, w)
        if mode == 'fused':
            p_t = probs[n: 2 * n]
            if self._h is not None:
                grid, valid = self._grid(rows[0][0], rows[n][0])
                p_t = torch.where(valid, warp(p_t, grid), p)  # outside the thermal view: RGB only
            p = 0.5 * (p + p_t)
        p = F.interpolate(p, size=tuple(ref_hw), mode='bilinear', align_corners=False)
        conf, mask = p.max(1)  # (n, H, W) each
        return mask.to(torch.uint8 if p.shape[1] <= 254 else torch.int32), conf

    def _grid(self, rgb_hw: tuple, thermal_hw: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached model-input-resolution grid pulling thermal probabilities into the RGB frame."""
        key = (rgb_hw, thermal_hw)
        if key not in self._grids:
            h, w = self.input_size
            s_rgb = np.diag([rgb_hw[1] / w, rgb_hw[0] / h, 1.0])  # rgb input px -> rgb px
            s_t = np.diag([thermal_hw[1] / w, thermal_hw[0] / h, 1.0])  # thermal input -> px
            dst_to_src = np.linalg.inv(s_t) @ np.linalg.inv(self._h) @ s_rgb
            self._grids[key] = warp_grid(dst_to_src, (h, w), (h, w), self.device)
        return self._grids[key]


def _to_host(tensors: list[torch.Tensor]) -> list[np.ndarray]:
    """Numpy copies of device tensors: asynchronous copies, then ONE wait (no per-item sync)."""
    copies = [t.to('cpu', non_blocking=True) for t in tensors]
    for device in {t.device for t in tensors if t.is_cuda}:  # the stream of THEIR device
        torch.cuda.current_stream(device).synchronize()
    return [c.numpy() for c in copies]
