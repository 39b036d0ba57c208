"""``univ_perception``: synchronised RGB + thermal images in, masks and detections out.

:class:`PerceptionIO` wires one node (the plain :class:`PerceptionNode` here, or the managed
:class:`~univ_ros.lifecycle_node.PerceptionLifecycleNode`): parameters' effects, QoS, topics,
timers and message conversion; the ROS-free :class:`~univ_ros.pipeline.Pipeline` pairs,
checks and hands images to one worker thread running the Predictor.

Inputs (remappable): ``rgb/image_raw`` and ``thermal/image_raw`` (or ``.../compressed`` with
``*_transport: compressed``) and their sibling ``camera_info`` topics. Outputs (``~`` = the
node's name): ``~/segmentation`` (mono8 class ids, 255 unlabeled; mono16 with 65535 beyond 254
classes), ``~/segmentation/color`` (rgb8 overlay) and ``~/detections/image`` (rgb8, boxes drawn)
computed only while subscribed, ``~/detections`` (vision_msgs/Detection2DArray), ``~/camera_info``
(the reference camera's CameraInfo, with the output header), ``~/label_info`` (segmentation
classes) and ``~/detections/label_info`` (detection classes; transient local), ``/diagnostics``.

Output headers: every image, detection and camera_info output copies the header (stamp and
frame_id) of the reference camera image it was computed from, and its pixels are that image's:
the RGB camera in fused and rgb mode, the thermal camera in thermal mode, and the usable camera
while fused/auto runs on one. LabelInfo and diagnostics carry the node clock's time.
"""

import posixpath
import signal
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from univ_ros import conversions as conv
from univ_ros.compressed import DECODERS
from univ_ros.messages import (
    StatusReport,
    fill_detections,
    fill_diagnostics,
    fill_label_info,
    silent_outputs,
)
from univ_ros.params import (
    NodeParams,
    apply_class_params,
    declare_node_params,
    input_qos,
    predictor_config,
    usage_lines,
)
from univ_ros.pipeline import Frame, Pipeline

try:  # Iron and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

NODE_NAME = 'univ_perception'
OUTPUT_QOS = QoSProfile(depth=5)  # reliable, volatile: what RViz and recorders expect
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
INFO_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)  # matches any driver
Loader = Callable[[Any], Any]  # PredictorConfig -> Predictor


def default_loader(config: Any) -> Any:
    """``univ_core.inference.load_predictor`` (imported here: torch loads only when needed)."""
    from univ_core.inference import load_predictor

    return load_predictor(config)


def load_predictor_for(node: Node, params: NodeParams, load: Loader) -> Any:
    """The Predictor for ``params`` with the node's class parameters applied."""
    predictor = load(predictor_config(params))
    apply_class_params(node, predictor)
    return predictor


class PerceptionIO:
    """Publishers, subscriptions, timers and conversions of one perception node.

    Args:
        node: a Node or LifecycleNode.
        params: its declared parameters.
        predictor: the Predictor (classes and palette are read here; it runs in :meth:`start`).
    """

    def __init__(self, node: Node, params: NodeParams, predictor: Any) -> None:
        from univ_core.inference.overlay import colorize, draw_detections

        self.node, self.params = node, params
        self._colorize, self._draw = colorize, draw_detections
        self.seg_classes = list(predictor.seg_classes or [])
        self.det_classes = list(predictor.det_classes or [])
        self.palette = predictor.palette
        self.device = str(predictor.device)
        self.pipeline: Pipeline | None = None
        self.model_state = 'loaded'
        base = {s: node.resolve_topic_name(getattr(params, f'{s}_topic')) for s in params.streams}
        compressed = {s: getattr(params, f'{s}_transport') == 'compressed' for s in base}
        self.topics = {s: t + '/compressed' if compressed[s] else t for s, t in base.items()}
        self.info_topics = {s: posixpath.join(posixpath.dirname(t), 'camera_info')
                            for s, t in base.items()}
        self._types = {s: CompressedImage if compressed[s] else Image for s in base}
        self._decoders = {s: DECODERS[s, getattr(params, f'{s}_transport')] for s in base}
        self._camera_info: dict[str, CameraInfo] = {}
        self._subscriptions: list[Any] = []
        self._create_publishers()
        self._next_diagnostics = 0.0
        self._timer = node.create_timer(0.1, self._tick)

    def _create_publishers(self) -> None:
        node = self.node
        self._seg_pub = node.create_publisher(Image, '~/segmentation', OUTPUT_QOS)
        self._color_pub = node.create_publisher(Image, '~/segmentation/color', OUTPUT_QOS)
        self._det_pub = node.create_publisher(Detection2DArray, '~/detections', OUTPUT_QOS)
        self._debug_pub = node.create_publisher(Image, '~/detections/image', OUTPUT_QOS)
        self._info_pub = node.create_publisher(CameraInfo, '~/camera_info', OUTPUT_QOS)
        self._diag_pub = node.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._publishers = [self._seg_pub, self._color_pub, self._det_pub, self._debug_pub,
                            self._info_pub, self._diag_pub]
        self._label_info = []  # (latched publisher, classes)
        for topic, classes in (('~/label_info', self.seg_classes),
                               ('~/detections/label_info', self.det_classes)):
            if classes:
                self._label_info.append((node.create_publisher(LabelInfo, topic, LATCHED),
                                         classes))
                self._publishers.append(self._label_info[-1][0])
        self.publish_label_info(float(self.params.predictor['score_threshold']))

    def publish_label_info(self, threshold: float) -> None:
        """(Re)publish the latched LabelInfo topics with the detection ``threshold``."""
        for publisher, classes in self._label_info:
            publisher.publish(fill_label_info(LabelInfo(), classes, self._now(), threshold))

    # ----------------------------------------------------------------- running
    def start(self, predictor: Any) -> None:
        """Subscribe to the cameras and start the worker on ``predictor``."""
        self.pipeline = Pipeline(self.params, predictor.predict, self._publish, self._log,
                                 self.topics, alive=self.node.context.ok)
        self.pipeline.start()
        for stream in self.params.streams:
            events = SubscriptionEventCallbacks(
                incompatible_qos=partial(self._on_bad_qos, self.topics[stream]))
            image_sub = self.node.create_subscription(
                self._types[stream], self.topics[stream], partial(self._on_image, stream),
                input_qos(self.params), event_callbacks=events,
                qos_overriding_options=QoSOverridingOptions.with_default_policies())
            info_sub = self.node.create_subscription(
                CameraInfo, self.info_topics[stream], partial(self._on_info, stream), INFO_QOS)
            self._subscriptions += [image_sub, info_sub]
            qos = image_sub.qos_profile
            self.node.get_logger().info(
                f'{stream} camera: {self.topics[stream]} ({self._types[stream].__name__}, QoS '
                f'reliability={qos.reliability.name.lower()}, history='
                f'{qos.history.name.lower()}, depth={qos.depth}), {self.info_topics[stream]}')

    def stop(self) -> None:
        """Unsubscribe and stop the worker (it finishes the job in hand); drops the Predictor."""
        for subscription in self._subscriptions:
            self.node.destroy_subscription(subscription)
        self._subscriptions.clear()
        if self.pipeline is not None and not self.pipeline.stop():
            self.node.get_logger().warning('inference thread still busy after 10 s')
        self.pipeline = None

    def destroy(self) -> None:
        """Stop, then remove the publishers and the timer."""
        self.stop()
        self.node.destroy_timer(self._timer)
        for publisher in self._publishers:
            self.node.destroy_publisher(publisher)
        self._publishers.clear()

    # --------------------------------------------------------------- callbacks
    def _on_image(self, stream: str, msg: Any) -> None:
        """Decode (cheap) and hand over; never blocks on inference."""
        received, pipeline = time.monotonic(), self.pipeline
        if pipeline is None:
            return
        pipeline.received(stream)
        try:
            image = self._decoders[stream](msg)
        except conv.ImageConversionError as err:
            pipeline.bad_frame(stream, err.kind, str(err))
            return
        stamp = conv.stamp_seconds(msg.header)
        age = self.node.get_clock().now().nanoseconds * 1e-9 - stamp
        pipeline.frame(Frame(stream, msg.header, image, stamp, received, age))

    def _on_info(self, stream: str, msg: CameraInfo) -> None:
        self._camera_info[stream] = msg

    def _on_bad_qos(self, topic: str, info: Any) -> None:
        if self.pipeline is not None:
            self.pipeline.stats.qos_incompatible()
        policy = getattr(info.last_policy_kind, 'name', info.last_policy_kind)
        self.node.get_logger().error(
            f'QoS incompatible on {topic}: a publisher cannot match this subscription '
            f'({policy} policy; subscription reliability {self.params.qos_reliability}), so '
            'its images never arrive. Set qos.reliability (or qos_overrides) to match the '
            'camera, e.g. best_effort for camera drivers'
        )

    def _publish(self, reference: Frame, prediction: Any) -> None:
        """Worker thread: every output of one job, with the reference image's header."""
        header, image = reference.header, reference.image
        if prediction.mask is not None:
            encoding = conv.mask_encoding(len(self.seg_classes))
            self._seg_pub.publish(conv.fill_image(Image(), prediction.mask, encoding, header))
            if self.params.publish_color and self._color_pub.get_subscription_count() > 0:
                overlay = self._colorize(prediction.mask, self.palette, image)
                self._color_pub.publish(conv.fill_image(Image(), overlay, 'rgb8', header))
        dets = prediction.detections
        self._det_pub.publish(
            fill_detections(Detection2DArray(), dets, header, class_id=self.params.class_id))
        if self.params.publish_debug_image and self._debug_pub.get_subscription_count() > 0:
            base = (self._colorize(prediction.mask, self.palette, image)
                    if prediction.mask is not None else image)
            boxed = self._draw(base, dets.boxes, dets.class_names, dets.scores)
            self._debug_pub.publish(conv.fill_image(Image(), boxed, 'rgb8', header))
        info = self._camera_info.get(reference.stream)
        if info is not None:
            info.header = header
            self._info_pub.publish(info)

    def _log(self, level: str, text: str) -> None:
        logger = self.node.get_logger()
        if level == 'error':  # one call site per severity: rclpy requires it
            logger.error(text)
        elif level == 'warn':
            logger.warning(text)
        else:
            logger.info(text)

    # ------------------------------------------------------------- diagnostics
    def _tick(self) -> None:
        """10 Hz: log cameras becoming unusable / usable; publish diagnostics."""
        changes = self.pipeline.poll() if self.pipeline is not None else []
        for warn, text in changes:
            self._log('warn' if warn else 'info', text)
        now = time.monotonic()
        if changes or now >= self._next_diagnostics:
            self._next_diagnostics = now + self.params.diagnostics_period
            self._diag_pub.publish(fill_diagnostics(DiagnosticArray(), [self._report()],
                                                    self._now()))

    def _report(self) -> StatusReport:
        name = f'{self.node.get_fully_qualified_name()}: pipeline'
        head = {'requested_mode': self.params.mode, 'model': self.model_state}
        if self.pipeline is None:
            return StatusReport(name, 'OK', f'inactive (model {self.model_state})', self.device,
                                {'state': 'inactive', **head})
        return self.pipeline.report(name, self.device, head)

    def _now(self) -> Header:
        return Header(stamp=self.node.get_clock().now().to_msg(), frame_id='')


def on_set_parameters(node: Node, parameters: list[Any]) -> SetParametersResult:
    """Apply the dynamic parameters (rclpy has already checked read-only and ranges)."""
    params, io, predictor = node.params, node.io, node.predictor
    for parameter in parameters:
        name, value = parameter.name, parameter.value
        if name in ('score_threshold', 'nms_iou'):
            params.predictor[name] = value
            if predictor is not None:
                setattr(predictor.config, name, value)
            if name == 'score_threshold' and io is not None:  # late joiners read it there
                io.publish_label_info(value)
        elif name == 'stale_after':
            params.stale_after = value
            if io is not None and io.pipeline is not None:
                io.pipeline.watch.stale_after = value
        elif name in ('publish_color', 'publish_debug_image'):
            setattr(params, name, value)
    return SetParametersResult(successful=True)


class PerceptionNode(Node):
    """The perception node, running from construction (``load`` injectable for tests)."""

    def __init__(self, load: Loader = default_loader, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.params = declare_node_params(self)
        self.io: PerceptionIO | None = None
        self.predictor = load_predictor_for(self, self.params, load)
        self.io = PerceptionIO(self, self.params, self.predictor)
        self.add_on_set_parameters_callback(partial(on_set_parameters, self))
        self.io.start(self.predictor)
        self.get_logger().info(start_line(self.params, self.predictor))
        if (note := silent_outputs(self.predictor)) is not None:
            self.get_logger().warn(note)

    def destroy_node(self) -> None:
        """Stop the worker (it finishes the pair in hand), then the node."""
        if self.io is not None:
            self.io.destroy()
        super().destroy_node()


def start_line(params: NodeParams, predictor: Any) -> str:
    """The log line saying what runs (``precision: auto`` as what it resolved to here)."""
    h, w = predictor.input_size
    asked = params.predictor['precision']
    ran = getattr(predictor, 'precision', asked)
    return (f'mode {params.mode}, device {predictor.device}, precision '
            f'{ran if ran == asked else f"{ran} ({asked})"}, input {w}x{h}, model '
            f'{params.predictor["model"] or "(default model)"}: '
            f'{len(predictor.seg_classes or [])} segmentation / '
            f'{len(predictor.det_classes or [])} detection classes')


def usage(executable: str = 'perception_node') -> str:
    """``--help``: how to run it and every parameter with its default and description."""
    return '\n'.join([
        f'usage: {executable} [--ros-args -p NAME:=VALUE ... | --params-file FILE]', '',
        f'ROS 2 node {NODE_NAME!r}: synchronised RGB + thermal in, masks and detections out.',
        'parameters (read-only unless marked dynamic):', *usage_lines()])


def wants_help(argv: list[str]) -> bool:
    """True when -h/--help comes before --ros-args."""
    user_args = argv[: argv.index('--ros-args')] if '--ros-args' in argv else argv
    return bool({'-h', '--help'} & set(user_args))


def main(args: list[str] | None = None, load: Loader = default_loader) -> int:
    """Entry point ``perception_node``: init, spin, always shut down."""
    argv = sys.argv[1:] if args is None else args
    if wants_help(argv):
        print(usage())
        return 0
    return spin_node(lambda: PerceptionNode(load), args)


def error_text(err: Exception) -> str:
    """One line for a log: our own errors' text says it all, others are named by type."""
    expected = isinstance(err, (FileNotFoundError, ValueError))
    return f'{err}' if expected else f'{type(err).__name__}: {err}'


def spin_node(make_node: Callable[[], Node], args: list[str] | None) -> int:
    """Init, build the node (a bad parameter or model file: fatal log, exit 1), spin, shut down."""
    rclpy.init(args=args)
    try:
        node = make_node()
    except Exception as err:  # any failure to start: one fatal line, exit 1
        # rclpy's parameter exceptions (a value out of range, a wrong type), a device torch
        # does not have, a model that does not load: say which, without a traceback
        get_logger(NODE_NAME).fatal(f'cannot start: {error_text(err)}')
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Ctrl-C in a terminal reaches the node twice (from the terminal and from ros2 launch):
        # the second must not interrupt the clean shutdown.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
