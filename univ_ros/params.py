"""Parameters of the ``univ_perception`` node: one table, declared with descriptions.

Every parameter is declared from :data:`PARAM_SPECS` (name, default, description, read-only,
range, choices), so the node, ``config/perception.yaml``, ``perception_node --help`` and the
tests share one list. Parameters that mirror a ``PredictorConfig`` field (``predictor=True``;
``thermal_norm.*`` mirror ``ThermalNorm``) take their default from that dataclass
(:mod:`univ_ros.predictor_defaults`) and are passed to it by name: exposing a new
PredictorConfig field is one :func:`mirrored` row. Read-only parameters need a restart; the
others are applied while the node runs. No torch import here (``--help`` stays fast). Only
APIs shared by Humble and Jazzy rclpy are used.
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from univ_ros.predictor_defaults import predictor_default

MODES = ('fused', 'rgb', 'thermal', 'auto')
TRANSPORTS = ('raw', 'compressed')
RELIABILITIES = {
    'best_effort': ReliabilityPolicy.BEST_EFFORT,
    'reliable': ReliabilityPolicy.RELIABLE,
}


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter."""

    name: str  # ROS parameter name ('.' nests it in YAML)
    default: Any  # default value, or a Parameter.Type: optional, unset unless given
    description: str  # shown by `ros2 param describe` and `perception_node --help`
    read_only: bool = True  # False: applied at run time
    bounds: tuple[float, float] | None = None  # inclusive range of a number
    choices: tuple[str, ...] | None = None  # allowed values of a string
    predictor: bool = False  # mirrors PredictorConfig.<name> / ThermalNorm (thermal_norm.*)


def mirrored(name: str, description: str, optional: Any = None, **kwargs: Any) -> ParamSpec:
    """A parameter mirroring ``PredictorConfig.<name>``; its default comes from there.

    ``optional``: the Parameter.Type declared when the dataclass default is None (unset).
    """
    default = predictor_default(name)
    default = list(default) if isinstance(default, tuple) else default  # a ROS array
    return ParamSpec(name, optional if default is None else default, description,
                     predictor=True, **kwargs)


# One parameter per entry: the table reads better than the formatter's layout.
# fmt: off
PARAM_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec('rgb_topic', 'rgb/image_raw',
              'RGB camera image topic (rgb8, bgr8, rgba8, bgra8, 8UC3, yuv422, yuv422_yuy2, '
              'bayer_{rggb,bggr,gbrg,grbg}8); its sibling camera_info is read too'),
    ParamSpec('thermal_topic', 'thermal/image_raw',
              'thermal camera image topic (mono8, mono16, 8UC1, 16UC1, 32FC1; colour encodings '
              'are reduced to grey); its sibling camera_info is read too'),
    ParamSpec('rgb_transport', 'raw',
              'raw: sensor_msgs/Image on rgb_topic | compressed: sensor_msgs/CompressedImage '
              '(jpeg/png) on rgb_topic/compressed', choices=TRANSPORTS),
    ParamSpec('thermal_transport', 'raw',
              'raw | compressed (png, 8 or 16 bit) on thermal_topic/compressed',
              choices=TRANSPORTS),
    ParamSpec('mode', 'fused',
              'fused | rgb | thermal | auto. fused and auto fall back to the usable camera when '
              'the other is stale: silent or sending only bad frames (WARN); auto does not warn '
              'about a camera never seen', choices=MODES),
    ParamSpec('sync_slop', 0.0,
              'largest RGB-thermal stamp difference of a pair, seconds; 0 = auto: half the '
              'frame period of the faster camera, measured from its stamps', bounds=(0.0, 0.5)),
    ParamSpec('stale_after', 0.5,
              'seconds without a good image after which a camera is stale (fall back to the '
              'other one)', read_only=False, bounds=(0.05, 60.0)),
    ParamSpec('qos.reliability', 'best_effort',
              'input subscriptions: best_effort (sensor data, default) | reliable; must be '
              'compatible with the cameras (reliable vs a best-effort camera receives nothing)',
              choices=tuple(RELIABILITIES)),
    ParamSpec('qos.depth', 5, 'input subscriptions: history depth (keep last N)',
              bounds=(1, 100)),
    mirrored('model', "UNIV model file (univ finetune / export); '' = the default model"),
    mirrored('device', 'auto | cpu | cuda | cuda:N'),
    mirrored('precision', 'auto (per device and CPU features) | fp32 | bf16 | fp16 (torch '
             'autocast) | int8 (backend onnxruntime, CPU)'),
    mirrored('backend', 'torch | onnxruntime (an .onnx model from univ export, or the model file '
             'exported in memory at start)'),
    mirrored('num_threads', 'intra-op threads of torch or onnxruntime (0: their default); leave a '
             'core to the executor so callbacks keep up with the cameras', bounds=(0, 256)),
    mirrored('input_size', "model input [H, W] (multiples of the patch size); unset = the model "
             "file's", optional=Parameter.Type.INTEGER_ARRAY),
    mirrored('score_threshold', 'detections scoring below are dropped', read_only=False,
             bounds=(0.0, 1.0)),
    mirrored('nms_iou', 'class-wise NMS IoU within one image', read_only=False,
             bounds=(0.01, 1.0)),
    mirrored('max_detections', 'most detections per image', bounds=(1, 10000)),
    mirrored('fusion_rule', 'fused mode: score of an object both cameras boxed: max (the better '
             "camera's) | noisy_or (1 - (1 - s_rgb)(1 - s_thermal)) | avg"),
    mirrored('fusion_weights', "fused mode: [rgb, thermal] scale of each camera's scores before "
             'fusion (0-1), for a rig whose one camera is known to be worse'),
    mirrored('fusion_iou', 'fused mode: RGB and thermal boxes of one class overlapping more '
             'are one object', bounds=(0.01, 1.0)),
    mirrored('homography', '9 values, row-major 3x3 thermal pixel -> RGB pixel; unset = '
             'pixel-aligned cameras (fused mode then needs equal image sizes)',
             optional=Parameter.Type.DOUBLE_ARRAY),
    mirrored('thermal_norm.mode', '16-bit/float thermal to [0, 1]: percentile (per frame) | '
             'fixed (low/high); 8-bit thermal is always divided by 255'),
    mirrored('thermal_norm.low', 'fixed mode: raw value mapped to 0'),
    mirrored('thermal_norm.high', 'fixed mode: raw value mapped to 1'),
    mirrored('thermal_norm.p_low', 'percentile mode: lower percentile', bounds=(0, 100)),
    mirrored('thermal_norm.p_high', 'percentile mode: upper percentile', bounds=(0, 100)),
    ParamSpec('class_id', 'id',
              'Detection2D results[].hypothesis.class_id: id = the integer class id as text, '
              'mapped to names by ~/detections/label_info | name = the class name',
              choices=('id', 'name')),
    ParamSpec('publish_color', True,
              '~/segmentation/color overlay (computed only while it has subscribers)',
              read_only=False),
    ParamSpec('publish_debug_image', True,
              '~/detections/image: boxes drawn on the reference image (computed only while it '
              'has subscribers)', read_only=False),
    ParamSpec('diagnostics_period', 1.0, 'seconds between /diagnostics messages',
              bounds=(0.05, 60.0)),
)

# Declared after the model is loaded: their defaults are the model file's.
CLASS_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec('class_names', Parameter.Type.STRING_ARRAY,
              "segmentation class names, one per class id (default: the model file's)"),
    ParamSpec('detection_class_names', Parameter.Type.STRING_ARRAY,
              "detection class names, one per class id (default: the model file's)"),
    ParamSpec('palette', Parameter.Type.INTEGER_ARRAY,
              'overlay colours: R, G, B per segmentation class, flattened (default: the '
              "model file's)"),
)
# fmt: on
SPECS = {spec.name: spec for spec in PARAM_SPECS + CLASS_SPECS}


@dataclass
class NodeParams:
    """The declared values (see :data:`PARAM_SPECS` for each one's meaning)."""

    rgb_topic: str
    thermal_topic: str
    rgb_transport: str
    thermal_transport: str
    mode: str
    sync_slop: float  # 0: auto
    stale_after: float
    qos_reliability: str
    qos_depth: int
    class_id: str
    publish_color: bool
    publish_debug_image: bool
    diagnostics_period: float
    predictor: dict[str, Any] = field(default_factory=dict)  # mirrored name -> value (or None)

    @property
    def streams(self) -> tuple[str, ...]:
        """The cameras this mode subscribes to."""
        return (self.mode,) if self.mode in ('rgb', 'thermal') else ('rgb', 'thermal')

    @property
    def aligned(self) -> bool:
        """True when fusion needs equal image sizes (no homography)."""
        return self.predictor.get('homography') is None


def describe(spec: ParamSpec, configurable: bool = False) -> ParameterDescriptor:
    """The ParameterDescriptor of ``spec`` (description, read-only flag, range).

    ``configurable``: a read-only parameter is declared writable (a lifecycle node reads it at
    configure and refuses it while configured).
    """
    descriptor = ParameterDescriptor(
        name=spec.name, description=spec.description,
        read_only=spec.read_only and not configurable
    )
    if spec.choices:
        descriptor.additional_constraints = f'one of: {", ".join(spec.choices)}'
    if spec.bounds is not None and isinstance(spec.default, int) and not isinstance(
            spec.default, bool):
        low, high = spec.bounds
        descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high))]
    elif spec.bounds is not None:
        low, high = spec.bounds
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float(low), to_value=float(high))
        ]
    return descriptor


def declare(node: Node, specs: tuple[ParamSpec, ...], defaults: dict | None = None,
            configurable: bool = False) -> dict:
    """Declare ``specs`` on ``node`` (``defaults`` replaces table defaults by name).

    ``configurable``: see :func:`describe`.

    A parameter declared before (a lifecycle node configured again) keeps its value.

    Returns:
        name -> value (None for an optional parameter left unset).

    Raises:
        ValueError: a string outside the parameter's choices.
    """
    values = {}
    for spec in specs:
        if not node.has_parameter(spec.name):
            default = (defaults or {}).get(spec.name, spec.default)
            node.declare_parameter(spec.name, default, describe(spec, configurable))
        value = node.get_parameter_or(spec.name, Parameter(spec.name)).value
        if spec.choices and value not in spec.choices:
            raise ValueError(f'parameter {spec.name}: expected one of {spec.choices}, '
                             f'got {value!r}')
        values[spec.name] = value
    return values


def declare_node_params(node: Node, configurable: bool = False) -> NodeParams:
    """Declare :data:`PARAM_SPECS` on ``node`` and return their checked values.

    ``configurable``: the read-only ones writable, for a lifecycle node (see :func:`describe`).

    Raises:
        ValueError: a value outside its choices, or an array of the wrong length.
    """
    v = declare(node, PARAM_SPECS, configurable=configurable)
    predictor = {s.name: v[s.name] for s in PARAM_SPECS if s.predictor}
    for name, length, shape in (('input_size', 2, '[H, W]'), ('homography', 9, '9 values'),
                                ('fusion_weights', 2, '[rgb, thermal]')):
        if predictor[name] is not None:
            if len(predictor[name]) != length:
                raise ValueError(f'parameter {name}: expected {shape}, got {predictor[name]}')
            predictor[name] = tuple(predictor[name])
    return NodeParams(
        rgb_topic=v['rgb_topic'], thermal_topic=v['thermal_topic'],
        rgb_transport=v['rgb_transport'], thermal_transport=v['thermal_transport'],
        mode=v['mode'], sync_slop=v['sync_slop'], stale_after=v['stale_after'],
        qos_reliability=v['qos.reliability'], qos_depth=v['qos.depth'], class_id=v['class_id'],
        publish_color=v['publish_color'], publish_debug_image=v['publish_debug_image'],
        diagnostics_period=v['diagnostics_period'], predictor=predictor,
    )


def predictor_config(params: NodeParams) -> Any:
    """The ``PredictorConfig`` these parameters ask for (imports torch).

    Raises:
        ValueError: values PredictorConfig rejects (e.g. precision int8 with backend torch).
    """
    from univ_core.inference import PredictorConfig, ThermalNorm

    flat = {k: v for k, v in params.predictor.items() if v is not None}
    norm = {k.split('.', 1)[1]: flat.pop(k) for k in list(flat) if k.startswith('thermal_norm.')}
    return PredictorConfig(**flat, thermal_norm=ThermalNorm(**norm))


def input_qos(params: NodeParams) -> QoSProfile:
    """The inputs' default QoS: keep last ``qos_depth``, ``qos_reliability``, volatile."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=params.qos_depth,
        reliability=RELIABILITIES[params.qos_reliability],
    )


def apply_class_params(node: Node, predictor: Any) -> None:
    """Declare :data:`CLASS_SPECS` (defaults: the model file's) and set them on ``predictor``.

    Raises:
        ValueError: a class list or palette whose length does not match the model's classes.
    """
    seg, det = predictor.seg_classes, predictor.det_classes
    palette = [int(c) for rgb in predictor.palette for c in rgb]  # (C * 3,) flattened
    defaults = {
        'class_names': seg,
        'detection_class_names': det,
        'palette': palette if seg else None,
    }
    defaults = {k: val for k, val in defaults.items() if val}  # empty: stays an optional
    set_classes(predictor, declare(node, CLASS_SPECS, defaults))


def set_classes(predictor: Any, values: dict) -> None:
    """Rename ``predictor``'s classes and recolour its overlays from :data:`CLASS_SPECS` values.

    A missing or None value keeps the model file's; the node and offline replay share this.

    Raises:
        ValueError: a class list or palette whose length does not match the model's classes.
    """
    seg, det = predictor.seg_classes, predictor.det_classes
    for name, model_value in (('class_names', seg), ('detection_class_names', det)):
        if values.get(name) is not None and len(values[name]) != len(model_value or []):
            raise ValueError(
                f'parameter {name}: the model has {len(model_value or [])} '
                f'classes, got {len(values[name])} names'
            )
    palette = values.get('palette')
    if palette is not None and len(palette) != 3 * len(seg or []):
        raise ValueError(
            f'parameter palette: expected 3 values (R, G, B) per segmentation '
            f'class = {3 * len(seg or [])}, got {len(palette)}'
        )
    predictor.seg_classes = list(values['class_names']) if values.get('class_names') else seg
    predictor.det_classes = (list(values['detection_class_names'])
                             if values.get('detection_class_names') else det)
    if palette is not None:
        predictor.palette = np.asarray(palette, np.uint8).reshape(-1, 3)  # (C, 3) RGB


def usage_lines() -> list[str]:
    """One line per parameter for ``perception_node --help``."""
    lines = []
    for spec in PARAM_SPECS + CLASS_SPECS:
        flag = '' if spec.read_only else ' [dynamic]'
        default = ('unset' if isinstance(spec.default, Parameter.Type)
                   else f'default {spec.default!r}')
        lines.append(f'  {spec.name} ({default}){flag}: {spec.description}')
    return lines
