"""Fill vision_msgs / diagnostic_msgs messages from Predictor outputs, for any message library.

The node (rclpy classes) and the bag replay (``rosbags`` classes) build the same messages with
the same code: every builder fills an already constructed top-level message and makes the
nested ones through ``types``, a function from a ROS type name ('vision_msgs/msg/Detection2D')
to its class, passing every field by keyword (``rosbags`` classes have no defaults). Use
:func:`ros_types` for rclpy and ``lambda name: typestore.types[name]`` for rosbags. Headers are
assigned as given, so they must come from the same library as the message.
"""

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # only for annotations: importing univ_core.inference loads torch
    from univ_core.inference import Detections

MessageTypes = Callable[[str], type]
LEVELS = ('OK', 'WARN', 'ERROR', 'STALE')  # DiagnosticStatus level constants, by name


def ros_types(type_name: str) -> type:
    """The rclpy message class of ``type_name`` ('pkg/msg/Name'), imported on first use."""
    package, kind, name = type_name.split('/')
    return getattr(importlib.import_module(f'{package}.{kind}'), name)


def _identity_pose(types: MessageTypes) -> Any:
    """geometry_msgs/PoseWithCovariance at the origin, unit quaternion, zero covariance."""
    pose = types('geometry_msgs/msg/Pose')(
        position=types('geometry_msgs/msg/Point')(x=0.0, y=0.0, z=0.0),
        orientation=types('geometry_msgs/msg/Quaternion')(x=0.0, y=0.0, z=0.0, w=1.0),
    )
    return types('geometry_msgs/msg/PoseWithCovariance')(
        pose=pose, covariance=np.zeros(36, np.float64)
    )


def _detection(
    types: MessageTypes, header: Any, box: Sequence[float], class_id: str, score: float,
    pose: Any
) -> Any:
    """One vision_msgs/Detection2D: an xyxy pixel box and one hypothesis (class_id, score)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    center = types('vision_msgs/msg/Pose2D')(
        position=types('vision_msgs/msg/Point2D')(x=0.5 * (x0 + x1), y=0.5 * (y0 + y1)), theta=0.0
    )
    bbox = types('vision_msgs/msg/BoundingBox2D')(center=center, size_x=x1 - x0, size_y=y1 - y0)
    hypothesis = types('vision_msgs/msg/ObjectHypothesis')(class_id=class_id, score=float(score))
    result = types('vision_msgs/msg/ObjectHypothesisWithPose')(hypothesis=hypothesis, pose=pose)
    return types('vision_msgs/msg/Detection2D')(header=header, results=[result], bbox=bbox, id='')


def fill_detections(
    msg: Any, detections: 'Detections', header: Any, types: MessageTypes = ros_types,
    class_id: str = 'name',
) -> Any:
    """Fill a vision_msgs/Detection2DArray (Humble and Jazzy field names).

    Each box becomes a Detection2D with ``bbox.center.position.x/y`` and ``size_x/size_y`` in
    the input image's pixels, one result with ``hypothesis.class_id`` and ``hypothesis.score``,
    an identity pose, and ``header`` (also the array's).

    Args:
        msg: a constructed Detection2DArray.
        detections: ``boxes`` (K, 4) float32 xyxy pixels, ``scores`` (K,) float32 in [0, 1],
            ``class_names`` K names and, for ``class_id='id'``, ``class_ids`` (K,) int.
        header: the std_msgs/Header to copy (same library as ``msg``).
        types: type name -> message class.
        class_id: 'name': the class name (bags, self-describing) | 'id': the integer class id
            as text, which a LabelInfo of the detection classes maps to the name.

    Returns:
        ``msg``.
    """
    if class_id not in ('name', 'id'):
        raise ValueError(f"class_id: expected 'name' or 'id', got {class_id!r}")
    pose = _identity_pose(types)  # shared: every detection has the same (unused) pose
    labels = (detections.class_names if class_id == 'name'
              else [str(int(k)) for k in np.asarray(detections.class_ids).tolist()])
    msg.header = header
    msg.detections = [
        _detection(types, header, box, label, score, pose)
        for box, label, score in zip(
            detections.boxes.tolist(), labels, detections.scores.tolist(), strict=True
        )
    ]
    return msg


def fill_label_info(
    msg: Any,
    class_names: Sequence[str],
    header: Any,
    threshold: float,
    types: MessageTypes = ros_types,
) -> Any:
    """Fill a vision_msgs/LabelInfo: class id i -> ``class_names[i]``, and the score threshold.

    Returns:
        ``msg``.
    """
    vision_class = types('vision_msgs/msg/VisionClass')
    msg.header = header
    msg.class_map = [
        vision_class(class_id=index, class_name=str(name))
        for index, name in enumerate(class_names)
    ]
    msg.threshold = float(threshold)
    return msg


@dataclass
class StatusReport:
    """One diagnostic_msgs/DiagnosticStatus, library-free."""

    name: str  # e.g. 'univ_perception: pipeline'
    level: str  # one of LEVELS
    message: str  # one line for people
    hardware_id: str = ''  # e.g. the device
    values: Mapping[str, object] = field(default_factory=dict)  # key -> value (str()-ed)

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f'StatusReport.level: expected one of {LEVELS}, got {self.level!r}')


def _text(value: object) -> str:
    """Diagnostic value text: floats with 4 significant digits, the rest as str()."""
    return f'{value:.4g}' if isinstance(value, float) else str(value)


def fill_diagnostics(
    msg: Any, reports: Sequence[StatusReport], header: Any, types: MessageTypes = ros_types
) -> Any:
    """Fill a diagnostic_msgs/DiagnosticArray with one DiagnosticStatus per report.

    Returns:
        ``msg``.
    """
    status = types('diagnostic_msgs/msg/DiagnosticStatus')
    key_value = types('diagnostic_msgs/msg/KeyValue')
    msg.header = header
    msg.status = [
        status(
            level=getattr(status, report.level),
            name=report.name,
            message=report.message,
            hardware_id=report.hardware_id,
            values=[
                key_value(key=key, value=_text(value)) for key, value in report.values.items()
            ],
        )
        for report in reports
    ]
    return msg


def silent_outputs(predictor: Any) -> str | None:
    """What a model without one of the two heads never publishes, or None (it has both).

    The node logs it once at start; ``univ replay`` and ``univ demo`` print it.
    """
    missing = [f'no {what} head: ~/{topics} stay silent'
               for what, classes, topics in (
                   ('segmentation', predictor.seg_classes,
                    'segmentation, ~/segmentation/color, ~/label_info'),
                   ('detection', predictor.det_classes,
                    'detections, ~/detections/image, ~/detections/label_info'))
               if not classes]
    return '; '.join(missing) or None
