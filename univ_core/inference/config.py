"""`PredictorConfig`: the run-time settings of the Predictor, one home for every default.

The ROS node's parameters, the replay, ``univ eval`` and the benchmarks read their defaults
from here (thresholds, fusion, precision, thermal normalisation).
"""

import re
from dataclasses import dataclass, field

from univ_core.data.thermal import ThermalNorm
from univ_core.inference.box_fusion import SCORE_RULES
from univ_core.inference.geometry import as_homography

BACKENDS = ('torch', 'onnxruntime')
PRECISIONS = ('auto', 'fp32', 'bf16', 'fp16', 'int8')
INT8_NEEDS = ('precision int8: needs backend onnxruntime on the CPU (dynamic int8 MatMuls); on '
              'a GPU use fp16 or a TensorRT engine')


@dataclass
class PredictorConfig:
    """Run-time settings (the model file holds architecture, classes and input size)."""

    model: str = ''  # UNIV model file (univ finetune); '' = the shipped default model
    device: str = 'auto'  # auto | cpu | cuda | cuda:N
    # auto (fastest accurate one for this device: univ_core/inference/precision.py) | fp32 |
    # bf16 | fp16 (torch autocast; CPU runs fp32 or bf16) | int8 (onnxruntime on CPU: the
    # graph's MatMuls quantised dynamically, per-channel weights; see onnx_backend)
    precision: str = 'auto'
    input_size: tuple[int, int] | None = None  # model input (H, W); None: the model file's
    # deployment cut (published): on msrs_mini's 26 training pairs, fused max, 0.4 publishes
    # 6.5 boxes per pair for 7.7 labelled objects (0.35: 17, 0.5: 1.3)
    score_threshold: float = 0.4
    # mAP (COCO protocol) is computed from every detection down to this score, up to
    # max_detections per image (``predict(..., scoring=True)``), never from the deployment cut
    eval_score_threshold: float = 0.001
    nms_iou: float = 0.5  # class-wise NMS IoU within one image
    duplicate_iou: float = 0.7  # a box overlapping a better box of another class more: dropped
    fusion_iou: float = 0.55  # fused: RGB + thermal boxes of a class overlapping more are fused
    # fused score of an object both cameras boxed: max | noisy_or | avg (box_fusion). max: on
    # msrs_mini's 26 training pairs fused mAP50 0.307 vs noisy_or 0.279 and avg 0.260 (README
    # "The default model"); noisy_or lifted two sub-threshold boxes of one object over the cut
    # (docs/experiments.md, "Fusion")
    fusion_rule: str = 'max'
    # (rgb, thermal) scale of each camera's scores before fusion, for a rig whose one camera
    # is known to be worse. (1, 1) on the default model: msrs_mini's thermal head is weak and
    # LLVIP's strong, so no fixed weight fits both (docs/experiments.md, "Fusion")
    fusion_weights: tuple[float, float] = (1.0, 1.0)
    max_detections: int = 100  # per image
    thermal_norm: ThermalNorm = field(default_factory=ThermalNorm)
    # 9 values: thermal pixel -> RGB pixel; fused outputs are in the RGB frame (thermal boxes
    # clipped to it, those wholly outside dropped)
    homography: tuple[float, ...] | None = None
    compile: bool = False  # torch.compile the model (static shapes; warm-up pays the cost)
    channels_last: bool = False  # torch: NHWC memory format for the conv pyramid and heads
    backend: str = 'torch'  # torch | onnxruntime (.onnx model file, or exported at start)
    num_threads: int = 0  # intra-op threads of torch or onnxruntime (0: their default)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f'precision: expected one of {PRECISIONS}, got {self.precision!r}')
        if self.backend not in BACKENDS:
            raise ValueError(f'backend: expected one of {BACKENDS}, got {self.backend!r}')
        if self.backend == 'onnxruntime' and (self.compile or self.precision in ('bf16', 'fp16')):
            raise ValueError('backend onnxruntime: runs the exported graph in fp32 or int8; '
                             'compile and precision bf16/fp16 are torch settings (TensorRT: '
                             'see univ export)')
        if self.precision == 'int8' and (self.backend != 'onnxruntime'
                                         or self.device.startswith('cuda')):
            raise ValueError(INT8_NEEDS)
        if not (0 <= self.eval_score_threshold <= 1 and 0 <= self.score_threshold <= 1):
            raise ValueError(f'score_threshold and eval_score_threshold must be in [0, 1], got '
                             f'{self.score_threshold}, {self.eval_score_threshold}')
        for name in ('nms_iou', 'duplicate_iou', 'fusion_iou'):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f'{name} must be in (0, 1], got {getattr(self, name)}')
        if not re.fullmatch(r'auto|cpu|cuda(:\d+)?', self.device):
            raise ValueError(f'device: expected auto, cpu, cuda or cuda:N, got {self.device!r}')
        if self.num_threads < 0:
            raise ValueError(f'num_threads must be >= 0, got {self.num_threads}')
        if self.fusion_rule not in SCORE_RULES:
            raise ValueError(f'fusion_rule: expected one of {SCORE_RULES}, '
                             f'got {self.fusion_rule!r}')
        self.fusion_weights = tuple(float(w) for w in self.fusion_weights)
        if len(self.fusion_weights) != 2 or not all(0 <= w <= 1 for w in self.fusion_weights):
            raise ValueError('fusion_weights: expected (rgb, thermal), each in [0, 1], got '
                             f'{self.fusion_weights}')
        if isinstance(self.thermal_norm, dict):
            self.thermal_norm = ThermalNorm(**self.thermal_norm)
        if self.homography is not None:
            self.homography = tuple(as_homography(self.homography).reshape(-1).tolist())
