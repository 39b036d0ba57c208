"""The Predictor's ``onnxruntime`` backend: an exported UNIV graph behind PerceptionModel's call.

:class:`OnnxPerceptionModel` answers ``forward(images, score_thresh, nms_iou, max_detections)``
with the same ``{'seg_logits', 'det'}`` as :class:`~univ_core.models.perception.PerceptionModel`,
so the Predictor's preprocessing, fusion and post-processing are shared by both backends.
The graph gives raw FCOS outputs; they are decoded here with torchvision's FCOS
post-processing (top-k, box decoding, clipping, class-wise NMS), the code the PyTorch path runs.
"""

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from univ_core.export.onnx import INPUT_NAME, ONNX_META_KEY, DecodeInfo
from univ_core.inference.precision import int8_reduce_range
from univ_core.models.detection_head import decode_points
from univ_core.models.model_file import SPEC_KEY, ModelSpec

if TYPE_CHECKING:
    from univ_core.inference.config import PredictorConfig
    from univ_core.inference.predictor import Predictor


def decode_fcos(raw: dict[str, torch.Tensor], info: DecodeInfo, score_thresh: float,
                nms_iou: float, max_detections: int) -> list[dict[str, torch.Tensor]]:
    """Detections from the graph's raw FCOS outputs, as ``FCOSDetector.predict`` decodes them.

    Args:
        raw: ``cls_logits`` (B, P, K), ``bbox_regression`` (B, P, 4), ``bbox_ctrness``
            (B, P, 1) float32, P = sum of the levels' h * w (finest level first).
        info: strides, level sizes, top-k and input size of the exported graph.
        score_thresh: minimum sqrt(class probability * centre-ness).
        nms_iou: class-wise NMS IoU threshold.
        max_detections: most boxes kept per image (best first).
    """
    return decode_points(raw, [tuple(s) for s in info.level_sizes], tuple(info.strides),
                         tuple(info.input_size), score_thresh, nms_iou, max_detections,
                         info.topk_candidates)


def read_onnx_metadata(source: bytes | Path) -> tuple[ModelSpec, DecodeInfo]:
    """The model spec and decode info stored in a ``univ export --format onnx`` file."""
    import onnx

    name = 'the ONNX bytes' if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise FileNotFoundError(f'no ONNX model at {source}: run `univ export --format onnx`')
    try:
        proto = (onnx.load_from_string(source) if isinstance(source, bytes)
                 else onnx.load(str(source), load_external_data=False))
    except Exception as err:  # truncated or foreign file: name it
        raise ValueError(f'{name}: not a readable ONNX model ({err})') from err
    meta = {p.key: p.value for p in proto.metadata_props}
    if SPEC_KEY not in meta or ONNX_META_KEY not in meta:
        raise ValueError(f'{name}: an ONNX model without UNIV metadata (export it with '
                         '`univ export --format onnx`)')
    info = json.loads(meta[ONNX_META_KEY])
    info['level_sizes'] = [tuple(s) for s in info['level_sizes']]
    info['input_size'] = tuple(info['input_size'])
    return ModelSpec(**json.loads(meta[SPEC_KEY])), DecodeInfo(**info)


def session_providers(device: torch.device) -> list[str]:
    """ONNX Runtime execution providers for ``device`` (CUDA needs onnxruntime-gpu)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.type == 'cuda':
        if 'CUDAExecutionProvider' not in available:
            raise ValueError(f'device {device}: onnxruntime has no CUDAExecutionProvider '
                             f'(available: {available}); install onnxruntime-gpu or use cpu')
        return ['CUDAExecutionProvider', 'CPUExecutionProvider']
    return ['CPUExecutionProvider']


class OnnxPerceptionModel(nn.Module):
    """An exported UNIV graph run by onnxruntime, called like a PerceptionModel.

    Args:
        source: an .onnx file from ``univ export`` or its bytes.
        device: where outputs are returned (and which execution provider runs the graph).
        int8: run :func:`quantize_int8` of the graph (CPU only; outputs differ slightly).
        num_threads: onnxruntime intra-op threads (0: onnxruntime's default, one per core).
    """

    def __init__(self, source: bytes | Path, device: torch.device | str = 'cpu',
                 int8: bool = False, num_threads: int = 0) -> None:
        super().__init__()
        self.spec, self.info = read_onnx_metadata(source)
        self.source = source if isinstance(source, bytes) else str(source)
        self.device = torch.device(device)
        self.int8 = int8
        self.num_threads = num_threads
        self._session = None  # made on first use, for the device then set

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) the graph takes (fixed at export)."""
        return tuple(self.info.input_size)

    def to(self, device: torch.device | str, *args: object, **kwargs: object):
        """Run on ``device`` (its execution provider) and return outputs there."""
        if torch.device(device) != self.device:
            self.device, self._session = torch.device(device), None
        return self

    def session(self):
        """The onnxruntime InferenceSession (all graph optimisations, no spin-waiting)."""
        import onnxruntime as ort

        if self._session is None:
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # No busy-waiting between ops: the node's ROS threads share the cores.
            options.add_session_config_entry('session.intra_op.allow_spinning', '0')
            options.intra_op_num_threads = self.num_threads  # 0: one per core
            graph = quantize_int8(self.source) if self.int8 else self.source
            self._session = ort.InferenceSession(graph, options,
                                                 providers=session_providers(self.device))
        return self._session

    def forward(self, images: torch.Tensor, score_thresh: float = 0.2, nms_iou: float = 0.6,
                max_detections: int = 100) -> dict:
        """Same contract as ``PerceptionModel.forward``.

        Args:
            images: (B, 3, H, W) float32 normalised, (H, W) = :attr:`input_size`.
            score_thresh: detection score threshold.
            nms_iou: class-wise NMS IoU threshold.
            max_detections: most boxes per image.
        """
        if tuple(images.shape[-2:]) != self.input_size:
            raise ValueError(f'images: the ONNX graph takes {self.input_size}, '
                             f'got {tuple(images.shape[-2:])}')
        array = np.ascontiguousarray(images.detach().float().cpu().numpy())
        ran = self.session().run(None, {INPUT_NAME: array})
        named = {n: torch.from_numpy(a).to(images.device) for n, a in
                 zip(self.info.outputs, ran, strict=True)}
        outputs: dict = {}
        if 'seg_logits' in named:
            outputs['seg_logits'] = named.pop('seg_logits')
        if named:
            outputs['det'] = decode_fcos(named, self.info, score_thresh, nms_iou,
                                         max_detections)
        return outputs


def quantize_int8(source: bytes | str, reduce_range: bool | None = None) -> bytes:
    """The graph with its weight MatMuls quantised dynamically to int8 (onnxruntime).

    Weights are quantised once, per output channel; activations per tensor at run time
    (``DynamicQuantizeLinear``). The ViT's linear layers hold most of its FLOPs, so this is the
    CPU speed-up that keeps the model's structure (VNNI / AVX-512 CPUs gain most). Attention's
    activation x activation MatMuls stay fp32 (int8 there flipped a third of the mask pixels
    for no speed), and so do convolutions (int8 ones ran slower). Outputs differ from fp32
    (see bench/RESULTS.md).

    ``reduce_range`` (default: where the CPU lacks VNNI, :mod:`~univ_core.inference.precision`)
    quantises weights to 7 bits, which AVX2's u8 x s8 int16 pair sums cannot saturate.
    """
    import logging
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as folder:
        fp32, int8 = Path(folder) / 'fp32.onnx', Path(folder) / 'int8.onnx'
        if isinstance(source, bytes):
            fp32.write_bytes(source)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # it warns on every graph that it was not pre-processed
        try:
            quantize_dynamic(fp32 if isinstance(source, bytes) else Path(source), int8,
                             weight_type=QuantType.QInt8, op_types_to_quantize=['MatMul'],
                             per_channel=True,
                             reduce_range=int8_reduce_range() if reduce_range is None
                             else reduce_range)
        finally:
            root.setLevel(level)
        return int8.read_bytes()


def as_onnx_model(model: nn.Module, input_size: tuple[int, int], device: torch.device,
                  int8: bool = False, num_threads: int = 0) -> OnnxPerceptionModel:
    """``model`` as an onnxruntime model: kept if it is one, else exported in memory (slow).

    Args:
        model: an :class:`OnnxPerceptionModel` or a PerceptionModel.
        input_size: (H, W) the Predictor feeds.
        device: the Predictor's device.
        int8: quantise the graph's MatMuls (:func:`quantize_int8`).
        num_threads: onnxruntime intra-op threads (0: its default).
    """
    if isinstance(model, OnnxPerceptionModel):
        if model.input_size != tuple(input_size):
            raise ValueError(f'input_size {tuple(input_size)}: the ONNX graph was exported at '
                             f'{model.input_size} (re-export with --input-size)')
        if (model.int8, model.num_threads) != (int8, num_threads):
            model.int8, model.num_threads, model._session = int8, num_threads, None
        return model.to(device)
    from univ_core.export.onnx import to_onnx_bytes

    # In memory only: the Predictor holds the classes, the graph's spec is a placeholder.
    spec = ModelSpec('unknown', ['?'], None, tuple(input_size))
    onnx_bytes = to_onnx_bytes(model, spec, tuple(input_size), batch=2)
    return OnnxPerceptionModel(onnx_bytes, device, int8, num_threads)


def load_onnx_predictor(config: 'PredictorConfig') -> 'Predictor':
    """A Predictor (backend onnxruntime) for the .onnx file ``config.model``."""
    from univ_core.inference.predictor import Predictor

    if config.backend != 'onnxruntime':
        raise ValueError(f'{config.model}: an .onnx model needs backend onnxruntime, '
                         f'got {config.backend!r}')
    model = OnnxPerceptionModel(Path(config.model))
    spec = model.spec
    return Predictor(model, spec.seg_classes, spec.det_classes, model.input_size, config,
                     spec.palette)
