r"""ONNX export of a UNIV model: backbone + pyramid + heads (LoRA is merged in model files).

The graph maps ``images`` (B, 3, H, W) float32 normalised (batch axis dynamic, H and W fixed at
export) to raw network outputs; detection decoding (top-k, box decoding, class-wise NMS) is not
in the graph and runs in :mod:`univ_core.inference.onnx_backend` with torchvision's FCOS code,
exactly as in the PyTorch path:

- ``seg_logits`` (B, K_seg, H, W) float32: UPerNet logits upsampled to the input size;
- ``cls_logits`` (B, P, K_det), ``bbox_regression`` (B, P, 4), ``bbox_ctrness`` (B, P, 1)
  float32: FCOS head outputs per point, P = sum of the detection levels' h * w
  (pyramid levels p3..p5).

Two changes make the network traceable with static shapes, both exact rewrites: the ViT's
position embedding is resampled once to the export grid (timm's per-call bicubic resampling
does not export), and the PPM's adaptive average pools become fixed averaging matrices
(ONNX only exports adaptive pooling whose output divides the input).

The file's metadata holds the UNIV model spec (``univ_model``) and what decoding needs
(``univ_onnx``: strides, level sizes, top-k), so an .onnx file is a self-contained model.

TensorRT on the vehicle (run once per GPU + TensorRT version; engines are not portable)::

    trtexec --onnx=univ.onnx --fp16 --saveEngine=univ.plan \
        --minShapes=images:1x3xHxW --optShapes=images:2x3xHxW --maxShapes=images:8x3xHxW \
        2>&1 | tee univ_trt_build.log

The engine build is SLOW (minutes for ViT-S; tens of minutes on a Jetson Orin) and silent for
long stretches: log it loudly (the ``tee`` above), run it at install time, never at node start.
"""

import copy
import io
import json
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from univ_core.models.model_file import SPEC_KEY, ModelSpec
from univ_core.models.perception import DET_LEVELS, PerceptionModel
from univ_core.train.checkpoint import atomic_write

ONNX_META_KEY = 'univ_onnx'
INPUT_NAME = 'images'
DEFAULT_BATCH, DEFAULT_OPSET = 2, 17  # traced batch (the axis stays dynamic), ONNX opset
DET_OUTPUTS = ('cls_logits', 'bbox_regression', 'bbox_ctrness')
TRTEXEC_HINT = ('trtexec --onnx={onnx} --fp16 --saveEngine={engine} '
                '--minShapes=images:1x3x{h}x{w} --optShapes=images:{b}x3x{h}x{w} '
                '--maxShapes=images:{bmax}x3x{h}x{w} 2>&1 | tee {engine}.build.log')


def averaging_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """(size_out, size_in) float32 rows averaging adaptive-pool bins (PyTorch's bin edges)."""
    matrix = torch.zeros(size_out, size_in)
    for i in range(size_out):
        start, end = (i * size_in) // size_out, -(-(i + 1) * size_in // size_out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


class MatrixAvgPool(nn.Module):
    """``AdaptiveAvgPool2d(out)`` for one fixed input size, as two MatMuls (exports anywhere).

    Args:
        out_size: output side length (the pool scale).
        in_hw: (h, w) of the maps it will see.
    """

    def __init__(self, out_size: int, in_hw: tuple[int, int]) -> None:
        super().__init__()
        self.register_buffer('rows', averaging_matrix(in_hw[0], out_size))  # (o, h)
        self.register_buffer('cols', averaging_matrix(in_hw[1], out_size).t().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, h, w) float32. Returns (B, C, o, o)."""
        return torch.matmul(torch.matmul(self.rows, x), self.cols)  # (B, C, o, w) -> (B, C, o, o)


def fcos_raw_outputs(head: nn.Module, features: list[torch.Tensor]) -> list[torch.Tensor]:
    """The outputs of torchvision's ``FCOSHead.forward``, with batch-free reshapes.

    Its ``view(N, ...)`` bakes the traced batch size into the graph; with one point per cell
    ``flatten`` + ``transpose`` give the same (B, h*w, n) order.

    Args:
        head: a torchvision ``FCOSHead`` (one anchor per location).
        features: float32 maps (B, C, h_i, w_i) of the detection levels, finest first.

    Returns:
        ``cls_logits`` (B, P, K), ``bbox_regression`` (B, P, 4), ``bbox_ctrness`` (B, P, 1).
    """
    cls_head, reg_head = head.classification_head, head.regression_head
    outputs: list[list[torch.Tensor]] = [[], [], []]
    for x in features:
        box_features = reg_head.conv(x)
        maps = (cls_head.cls_logits(cls_head.conv(x)),  # (B, K, h, w)
                nn.functional.relu(reg_head.bbox_reg(box_features)),  # (B, 4, h, w)
                reg_head.bbox_ctrness(box_features))  # (B, 1, h, w)
        for collected, level_map in zip(outputs, maps, strict=True):
            collected.append(level_map.flatten(2).transpose(1, 2))  # (B, h*w, n)
    return [torch.cat(collected, dim=1) for collected in outputs]


class OnnxNetwork(nn.Module):
    """What the ONNX graph computes: images -> seg logits at input size + raw FCOS outputs.

    Args:
        model: the PerceptionModel.
        traceable: compute the FCOS outputs with :func:`fcos_raw_outputs` (False: torchvision's
            own ``FCOSHead.forward``, the reference the export is checked against).
    """

    def __init__(self, model: PerceptionModel, traceable: bool = True) -> None:
        super().__init__()
        self.model = model
        self.traceable = traceable

    def output_names(self) -> list[str]:
        """Names of the outputs, in ``forward``'s order."""
        names = ['seg_logits'] if self.model.seg_head is not None else []
        return names + (list(DET_OUTPUTS) if self.model.det_head is not None else [])

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Args: images (B, 3, H, W) float32 normalised. Returns the outputs named above."""
        features = self.model.features(images)
        outputs = []
        if self.model.seg_head is not None:
            logits = self.model.seg_head(features)  # (B, K, h_0, w_0)
            outputs.append(nn.functional.interpolate(
                logits, size=images.shape[-2:], mode='bilinear', align_corners=False))
        if self.model.det_head is not None and self.traceable:
            outputs += fcos_raw_outputs(self.model.det_head.head, features[DET_LEVELS])
        elif self.model.det_head is not None:
            raw = self.model.det_head(features[DET_LEVELS])
            outputs += [raw[name] for name in DET_OUTPUTS]
        return tuple(outputs)


@dataclass
class DecodeInfo:
    """What detection decoding needs besides the network outputs (stored in the .onnx file)."""

    input_size: tuple[int, int]  # (H, W) the graph was exported at
    outputs: list[str]  # graph output names, in order
    strides: list[float]  # input pixels per cell of each pyramid level
    level_sizes: list[tuple[int, int]]  # (h, w) of each detection level, finest first
    topk_candidates: int  # best points kept per level before NMS


def level_sizes(model: PerceptionModel, input_size: tuple[int, int]) -> list[tuple[int, int]]:
    """(h, w) of each pyramid level for an input of ``input_size`` (one dummy forward)."""
    with torch.inference_mode():
        device = next(model.parameters()).device
        features = model.features(torch.zeros(1, 3, *input_size, device=device))
    return [tuple(f.shape[-2:]) for f in features]


def export_ready(model: PerceptionModel, input_size: tuple[int, int]) -> OnnxNetwork:
    """A CPU fp32 eval copy of ``model`` specialised to ``input_size`` (outputs unchanged)."""
    model = copy.deepcopy(model).float().cpu().eval()
    multiple = model.input_multiple
    if input_size[0] % multiple or input_size[1] % multiple:
        raise ValueError(f'input_size {input_size}: H and W must be multiples of {multiple}')
    if getattr(model.backbone, 'dynamic_img_size', False):
        # Same resampling the dynamic forward does per call; the forward then skips it.
        model.backbone.set_input_size(img_size=tuple(input_size))
    if model.seg_head is not None:
        coarsest = level_sizes(model, input_size)[-1]
        for branch in model.seg_head.ppm.branches:
            pool = branch[0]
            branch[0] = MatrixAvgPool(int(np.atleast_1d(pool.output_size)[0]), coarsest)
    return OnnxNetwork(model).eval()


def decode_info(network: OnnxNetwork, input_size: tuple[int, int]) -> DecodeInfo:
    """The :class:`DecodeInfo` of an :func:`export_ready` network."""
    det = network.model.det_head
    return DecodeInfo(tuple(input_size), network.output_names(),
                      list(det.strides) if det is not None else [],
                      level_sizes(network.model, input_size)[DET_LEVELS],
                      det.topk_candidates if det is not None else 0)


def to_onnx_bytes(model: PerceptionModel, spec: ModelSpec, input_size: tuple[int, int],
                  batch: int = DEFAULT_BATCH, opset: int = DEFAULT_OPSET) -> bytes:
    """Serialised ONNX (legacy TorchScript exporter) with spec + decode info as metadata.

    Args:
        model: the PyTorch model (any device; it is copied, not changed).
        spec: its model spec (stored with ``input_size`` set to the export size).
        input_size: (H, W) of the graph input.
        batch: example batch traced (the batch axis stays dynamic).
        opset: ONNX opset (17 or 18 suit TensorRT 8.6+ and onnxruntime).

    Returns:
        The ONNX model's bytes.
    """
    import onnx

    network = export_ready(model, input_size)
    info = decode_info(network, input_size)
    example = torch.randn(batch, 3, *input_size)
    axes = {name: {0: 'batch'} for name in [INPUT_NAME, *info.outputs]}
    buffer = io.BytesIO()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore', torch.jit.TracerWarning)  # shape checks become constants
        warnings.simplefilter('ignore', DeprecationWarning)  # the legacy exporter, on purpose
        torch.onnx.export(network, (example,), buffer, dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=info.outputs,
                          dynamic_axes=axes, do_constant_folding=True)
    proto = onnx.load_from_string(buffer.getvalue())
    meta = {SPEC_KEY: json.dumps(asdict(replace(spec, input_size=tuple(input_size)))),
            ONNX_META_KEY: json.dumps(asdict(info))}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def compare_with_torch(onnx_bytes: bytes, reference: nn.Module, batch: int,
                       input_size: tuple[int, int], seed: int = 0) -> dict[str, float]:
    """Max abs difference per output between onnxruntime and ``reference`` on random input.

    Args:
        onnx_bytes: the serialised graph.
        reference: ``OnnxNetwork(original model, traceable=False)`` (CPU, fp32).
        batch: images in the random batch.
        input_size: (H, W).
        seed: of the random (B, 3, H, W) standard-normal input.
    """
    import onnxruntime as ort

    images = torch.randn(batch, 3, *input_size, generator=torch.Generator().manual_seed(seed))
    session = ort.InferenceSession(onnx_bytes, providers=['CPUExecutionProvider'])
    ran = session.run(None, {INPUT_NAME: images.numpy()})
    with torch.inference_mode():
        expected = reference(images)
    names = [o.name for o in session.get_outputs()]
    return {name: float(np.abs(got - want.numpy()).max())
            for name, got, want in zip(names, ran, expected, strict=True)}


def export_onnx(model: PerceptionModel, spec: ModelSpec, out: Path,
                input_size: tuple[int, int] | None = None, batch: int = DEFAULT_BATCH,
                opset: int = DEFAULT_OPSET, tolerance: float = 1e-3) -> dict[str, float]:
    """Export, verify against PyTorch with onnxruntime, then write ``out`` atomically.

    Args:
        model: the PyTorch model (copied, not changed).
        spec: its model spec.
        out: the .onnx file to write.
        input_size: (H, W) of the graph input (None: the spec's).
        batch: example and verification batch (the batch axis stays dynamic).
        opset: ONNX opset.
        tolerance: largest max abs difference accepted; above it nothing is written.

    Returns:
        Max abs difference per output (onnxruntime vs the original PyTorch model).
    """
    size = tuple(input_size or spec.input_size)
    if batch < 1:
        raise ValueError(f'batch: expected >= 1, got {batch}')
    onnx_bytes = to_onnx_bytes(model, spec, size, batch, opset)
    reference = OnnxNetwork(copy.deepcopy(model).float().cpu().eval(), traceable=False)
    diffs = compare_with_torch(onnx_bytes, reference, batch, size)
    if max(diffs.values()) > tolerance:
        raise ValueError(f'{out}: onnxruntime differs from PyTorch by {diffs} > {tolerance}; '
                         'not written')
    atomic_write(Path(out), lambda tmp: tmp.write_bytes(onnx_bytes))
    return diffs


def trtexec_command(onnx_path: Path, input_size: tuple[int, int],
                    batch: int = DEFAULT_BATCH) -> str:
    """The trtexec line building an fp16 TensorRT engine next to ``onnx_path`` (log kept)."""
    engine = Path(onnx_path).with_suffix('.plan')
    return TRTEXEC_HINT.format(onnx=onnx_path, engine=engine, h=input_size[0], w=input_size[1],
                               b=batch, bmax=max(8, batch))
