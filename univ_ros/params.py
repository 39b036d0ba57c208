"""Parameters of the ``univ_perception`` node: one table, declared with descriptions.

Every parameter is declared from :data:`PARAM_SPECS` (name, default, description, read-only,
range), so the node, ``config/perception.yaml`` and the tests share one list. Parameters whose
change needs a restart (topics, QoS, model, device, ...) are read-only; :data:`DYNAMIC` ones are
applied while the node runs. Only APIs shared by Humble and Jazzy rclpy are used.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from univ_core.inference import Predictor, PredictorConfig, ThermalNorm
from univ_ros.sync import DEFAULT_SLOP

MODES = ('fused', 'rgb', 'thermal', 'auto')
RELIABILITIES = {
    'best_effort': ReliabilityPolicy.BEST_EFFORT,
    'reliable': ReliabilityPolicy.RELIABLE,
}


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter."""

    name: str  # ROS parameter name ('.' nests it in YAML)
    default: Any  # default value, or a Parameter.Type: optional, unset unless given
    description: str  # shown by `ros2 param describe`
    read_only: bool = True  # False: applied at run time (see DYNAMIC)
    bounds: tuple[float, float] | None = None  # inclusive range of a number


# One parameter per entry: the table reads better than the formatter's layout.
# fmt: off
PARAM_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec('rgb_topic', 'rgb/image_raw',
              'RGB camera sensor_msgs/Image topic (rgb8, bgr8, rgba8, bgra8, 8UC3)'),
    ParamSpec('thermal_topic', 'thermal/image_raw',
              'thermal camera sensor_msgs/Image topic (mono8, mono16, 8UC1, 16UC1, 32FC1; '
              'colour encodings are reduced to grey)'),
    ParamSpec('mode', 'fused',
              'fused | rgb | thermal | auto. fused and auto fall back to the live camera when '
              'the other is stale (WARN); auto does not warn about a camera never seen'),
    ParamSpec('sync_slop', DEFAULT_SLOP,
              'largest RGB-thermal stamp difference of a pair, seconds (default: half a 30 Hz '
              'frame)', bounds=(1e-4, 0.5)),
    ParamSpec('stale_after', 0.5,
              'seconds of silence after which a camera counts as stale (fall back to the other '
              'one)', read_only=False, bounds=(0.05, 60.0)),
    ParamSpec('qos.reliability', 'best_effort',
              'input subscriptions: best_effort (sensor data, default) | reliable; must be '
              'compatible with the cameras (reliable vs a best-effort camera receives nothing)'),
    ParamSpec('qos.depth', 5, 'input subscriptions: history depth (keep last N)',
              bounds=(1, 100)),
    ParamSpec('model', '', "UNIV model file (univ finetune / export); '' = the default model"),
    ParamSpec('device', 'auto', 'auto | cpu | cuda | cuda:N'),
    ParamSpec('precision', 'fp32',
              'fp32 | bf16 | fp16 (torch autocast) | int8 (backend onnxruntime, CPU)'),
    ParamSpec('backend', 'torch', 'torch | onnxruntime (an .onnx model from univ export, or '
              'the model file exported in memory at start)'),
    ParamSpec('input_size', Parameter.Type.INTEGER_ARRAY,
              "model input [H, W] (multiples of the patch size); unset = the model file's"),
    ParamSpec('score_threshold', 0.3, 'detections scoring below are dropped',
              read_only=False, bounds=(0.0, 1.0)),
    ParamSpec('nms_iou', 0.5, 'class-wise NMS IoU (also merges RGB and thermal boxes)',
              read_only=False, bounds=(0.01, 1.0)),
    ParamSpec('max_detections', 100, 'most detections per image', bounds=(1, 10000)),
    ParamSpec('homography', Parameter.Type.DOUBLE_ARRAY,
              '9 values, row-major 3x3 thermal pixel -> RGB pixel; unset = pixel-aligned '
              'cameras (fused mode then needs equal image sizes)'),
    ParamSpec('thermal_norm.mode', 'percentile',
              '16-bit/float thermal to [0, 1]: percentile (per frame) | fixed (low/high); '
              '8-bit thermal is always divided by 255'),
    ParamSpec('thermal_norm.low', 0.0, 'fixed mode: raw value mapped to 0'),
    ParamSpec('thermal_norm.high', 65535.0, 'fixed mode: raw value mapped to 1'),
    ParamSpec('thermal_norm.p_low', 1.0, 'percentile mode: lower percentile', bounds=(0, 100)),
    ParamSpec('thermal_norm.p_high', 99.0, 'percentile mode: upper percentile',
              bounds=(0, 100)),
    ParamSpec('publish_color', True,
              '~/segmentation/color overlay (computed only while it has subscribers)',
              read_only=False),
    ParamSpec('diagnostics_period', 1.0, 'seconds between /diagnostics messages',
              bounds=(0.05, 60.0)),
)
DYNAMIC = tuple(spec.name for spec in PARAM_SPECS if not spec.read_only)

# Declared after the model is loaded: their defaults are the model file's.
CLASS_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec('class_names', Parameter.Type.STRING_ARRAY,
              "segmentation class names, one per class id (default: the model file's)"),
    ParamSpec('detection_class_names', Parameter.Type.STRING_ARRAY,
              "detection class names, one per class (default: the model file's)"),
    ParamSpec('palette', Parameter.Type.INTEGER_ARRAY,
              'overlay colours: R, G, B per segmentation class, flattened (default: the '
              "model file's)"),
)
# fmt: on


@dataclass
class NodeParams:
    """The values of :data:`PARAM_SPECS`, checked."""

    rgb_topic: str = 'rgb/image_raw'  # RGB camera topic
    thermal_topic: str = 'thermal/image_raw'  # thermal camera topic
    mode: str = 'fused'  # fused | rgb | thermal | auto
    sync_slop: float = DEFAULT_SLOP  # pair stamp tolerance, seconds
    stale_after: float = 0.5  # silence (s) after which a camera is stale
    qos_reliability: str = 'best_effort'  # best_effort | reliable (inputs)
    qos_depth: int = 5  # input history depth
    model: str = ''  # model file; '' = default model
    device: str = 'auto'  # torch device
    precision: str = 'fp32'  # fp32 | bf16 | fp16 | int8
    backend: str = 'torch'  # torch | onnxruntime
    input_size: tuple[int, int] | None = None  # model input (H, W); None = the model's
    score_threshold: float = 0.3  # detection score floor
    nms_iou: float = 0.5  # NMS IoU
    max_detections: int = 100  # per image
    homography: tuple[float, ...] | None = None  # thermal px -> RGB px, 9 values
    thermal_norm: ThermalNorm | None = None  # None = ThermalNorm()
    publish_color: bool = True  # colour overlay output
    diagnostics_period: float = 1.0  # seconds

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f'parameter mode: expected one of {MODES}, got {self.mode!r}')
        if self.qos_reliability not in RELIABILITIES:
            raise ValueError(
                f'parameter qos.reliability: expected one of '
                f'{tuple(RELIABILITIES)}, got {self.qos_reliability!r}'
            )
        if self.input_size is not None and len(self.input_size) != 2:
            raise ValueError(f'parameter input_size: expected [H, W], got {self.input_size}')
        if self.homography is not None and len(self.homography) != 9:
            raise ValueError(f'parameter homography: expected 9 values, got {self.homography}')
        self.thermal_norm = self.thermal_norm or ThermalNorm()

    @property
    def streams(self) -> tuple[str, ...]:
        """The cameras this mode subscribes to."""
        return (self.mode,) if self.mode in ('rgb', 'thermal') else ('rgb', 'thermal')


def describe(spec: ParamSpec) -> ParameterDescriptor:
    """The ParameterDescriptor of ``spec`` (description, read-only flag, range)."""
    descriptor = ParameterDescriptor(
        name=spec.name, description=spec.description, read_only=spec.read_only
    )
    if spec.bounds is not None and isinstance(spec.default, int):
        low, high = spec.bounds
        descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high))]
    elif spec.bounds is not None:
        low, high = spec.bounds
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float(low), to_value=float(high))
        ]
    return descriptor


def declare(node: Node, specs: tuple[ParamSpec, ...], defaults: dict | None = None) -> dict:
    """Declare ``specs`` on ``node`` (``defaults`` replaces table defaults by name).

    Returns:
        name -> value (None for an optional parameter left unset).
    """
    values = {}
    for spec in specs:
        default = (defaults or {}).get(spec.name, spec.default)
        node.declare_parameter(spec.name, default, describe(spec))
        values[spec.name] = node.get_parameter_or(spec.name, Parameter(spec.name)).value
    return values


def declare_node_params(node: Node) -> NodeParams:
    """Declare :data:`PARAM_SPECS` on ``node`` and return their checked values."""
    v = declare(node, PARAM_SPECS)
    norm = ThermalNorm(
        v['thermal_norm.mode'],
        v['thermal_norm.low'],
        v['thermal_norm.high'],
        v['thermal_norm.p_low'],
        v['thermal_norm.p_high'],
    )
    return NodeParams(
        rgb_topic=v['rgb_topic'],
        thermal_topic=v['thermal_topic'],
        mode=v['mode'],
        sync_slop=v['sync_slop'],
        stale_after=v['stale_after'],
        qos_reliability=v['qos.reliability'],
        qos_depth=v['qos.depth'],
        model=v['model'],
        device=v['device'],
        precision=v['precision'],
        backend=v['backend'],
        input_size=None if v['input_size'] is None else tuple(v['input_size']),
        score_threshold=v['score_threshold'],
        nms_iou=v['nms_iou'],
        max_detections=v['max_detections'],
        homography=None if v['homography'] is None else tuple(v['homography']),
        thermal_norm=norm,
        publish_color=v['publish_color'],
        diagnostics_period=v['diagnostics_period'],
    )


def predictor_config(params: NodeParams) -> PredictorConfig:
    """The PredictorConfig these parameters ask for."""
    return PredictorConfig(
        model=params.model,
        device=params.device,
        precision=params.precision,
        backend=params.backend,
        input_size=params.input_size,
        score_threshold=params.score_threshold,
        nms_iou=params.nms_iou,
        max_detections=params.max_detections,
        thermal_norm=params.thermal_norm,
        homography=params.homography,
    )


def input_qos(params: NodeParams) -> QoSProfile:
    """The inputs' default QoS: keep last ``qos_depth``, ``qos_reliability``, volatile."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=params.qos_depth,
        reliability=RELIABILITIES[params.qos_reliability],
    )


def apply_class_params(node: Node, predictor: Predictor) -> None:
    """Declare :data:`CLASS_SPECS` (defaults: the model file's) and set them on ``predictor``.

    Raises:
        ValueError: a class list or palette whose length does not match the model's classes.
    """
    seg, det = predictor.seg_classes, predictor.det_classes
    palette = np.asarray(predictor.palette, np.int64).reshape(-1).tolist()  # (C * 3,)
    defaults = {
        'class_names': seg,
        'detection_class_names': det,
        'palette': palette if seg else None,
    }
    defaults = {k: val for k, val in defaults.items() if val}  # empty: stays an optional
    v = declare(node, CLASS_SPECS, defaults)
    for name, model_value in (('class_names', seg), ('detection_class_names', det)):
        if v[name] is not None and len(v[name]) != len(model_value or []):
            raise ValueError(
                f'parameter {name}: the model has {len(model_value or [])} '
                f'classes, got {len(v[name])} names'
            )
    if v['palette'] is not None and len(v['palette']) != 3 * len(seg or []):
        raise ValueError(
            f'parameter palette: expected 3 values (R, G, B) per segmentation '
            f'class = {3 * len(seg or [])}, got {len(v["palette"])}'
        )
    predictor.seg_classes, predictor.det_classes = v['class_names'], v['detection_class_names']
    if v['palette'] is not None:
        predictor.palette = np.asarray(v['palette'], np.uint8).reshape(-1, 3)  # (C, 3) RGB
