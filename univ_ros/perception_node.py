"""``univ_perception``: synchronised RGB + thermal images in, masks and detections out.

The node only wires parameters (:mod:`univ_ros.params`), QoS, topics and threads; the ROS-free
:class:`univ_core.inference.Predictor` does the work. Subscription callbacks decode and check
each image (a numpy view, no copy), pair RGB and thermal by stamp
(:class:`~univ_ros.sync.ApproximateTimeSync`) and put the newest pair into a one-slot buffer
(:class:`~univ_ros.sync.LatestSlot`); one worker thread runs inference and publishes. A pair
replaced before the worker took it is dropped and counted; nothing queues without bound.

Outputs (``~`` = the node's name): ``~/segmentation`` (mono8 class ids, 255 unlabeled; mono16
with 65535 beyond 254 classes), ``~/segmentation/color`` (rgb8 overlay, computed only while
subscribed), ``~/detections`` (vision_msgs/Detection2DArray, class NAMES as class_id),
``~/label_info`` (vision_msgs/LabelInfo, transient local), ``/diagnostics``.

Output headers: every image and detection output copies the header (stamp and frame_id) of the
reference camera image it was computed from, and its pixels are that image's: the RGB camera in
fused and rgb mode, the thermal camera in thermal mode. When fused/auto falls back to one camera
(the other silent for ``stale_after`` s), the reference is the live camera. LabelInfo and
diagnostics carry the node clock's time and an empty frame_id.
"""

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from univ_core.inference import Predictor, PredictorConfig, load_predictor
from univ_core.inference.overlay import colorize
from univ_ros import conversions as conv
from univ_ros.messages import fill_detections, fill_diagnostics, fill_label_info
from univ_ros.params import (
    PARAM_SPECS,
    apply_class_params,
    declare_node_params,
    input_qos,
    predictor_config,
)
from univ_ros.perception_status import PipelineStats, camera_state, change_message, pipeline_report
from univ_ros.stream_watch import StreamWatch
from univ_ros.sync import ApproximateTimeSync, LatestSlot, Pair

try:  # Iron and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

NODE_NAME = 'univ_perception'
LOG_EVERY = 60.0  # seconds between two log lines about the same problem on the same topic
DECODERS = {'rgb': conv.rgb_from_msg, 'thermal': conv.thermal_from_msg}
ACCEPTED = {
    'rgb': conv.COLOUR_ENCODINGS,
    'thermal': conv.THERMAL_ENCODINGS + conv.COLOUR_ENCODINGS,
}
OUTPUT_QOS = QoSProfile(depth=5)  # reliable, volatile: what RViz and recorders expect


@dataclass(frozen=True)
class Frame:
    """One decoded camera image and the message header it came with."""

    stream: str  # 'rgb' | 'thermal'
    header: Any  # std_msgs/Header of the camera image
    image: np.ndarray  # (H, W, 3) uint8 RGB, or (H, W) uint8 | uint16 | float32 thermal
    stamp: float  # header stamp, seconds


class PerceptionNode(Node):
    """The perception node; ``load`` builds the Predictor (injectable for tests)."""

    def __init__(
        self, load: Callable[[PredictorConfig], Predictor] = load_predictor, **node_kwargs: Any
    ) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.params = declare_node_params(self)
        self.predictor = load(predictor_config(self.params))
        apply_class_params(self, self.predictor)
        self.sync = ApproximateTimeSync(self.params.sync_slop)
        self.slot: LatestSlot[Pair | Frame] = LatestSlot()
        self.watch = StreamWatch(self.params.streams, self.params.stale_after)
        self.stats = PipelineStats(self.params.streams)
        self._logged: dict[tuple[str, str], float] = {}  # (topic, problem) -> last log time
        self._seen: set[str] = set()  # cameras that sent at least one good image
        self._create_publishers()
        self._topics = {
            s: self.resolve_topic_name(getattr(self.params, f'{s}_topic'))
            for s in self.params.streams
        }
        for stream in self.params.streams:
            self._subscribe(stream)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._next_diagnostics = 0.0
        self.create_timer(0.1, self._watch_cameras)
        self._worker = threading.Thread(target=self._work, name='univ_inference', daemon=True)
        self._worker.start()
        self._log_start()

    # ------------------------------------------------------------------ wiring
    def _create_publishers(self) -> None:
        self._seg_pub = self.create_publisher(Image, '~/segmentation', OUTPUT_QOS)
        self._color_pub = self.create_publisher(Image, '~/segmentation/color', OUTPUT_QOS)
        self._det_pub = self.create_publisher(Detection2DArray, '~/detections', OUTPUT_QOS)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._label_pub = self.create_publisher(LabelInfo, '~/label_info', latched)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        classes = self.predictor.seg_classes or self.predictor.det_classes or []
        self._label_pub.publish(
            fill_label_info(LabelInfo(), classes, self._now_header(), self.params.score_threshold)
        )

    def _subscribe(self, stream: str) -> None:
        """Subscribe to a camera (QoS overridable by parameters); log the effective QoS."""
        topic = self._topics[stream]
        events = SubscriptionEventCallbacks(incompatible_qos=partial(self._on_bad_qos, topic))
        qos = self.create_subscription(
            Image, topic, partial(self._on_image, stream), input_qos(self.params),
            event_callbacks=events,
            qos_overriding_options=QoSOverridingOptions.with_default_policies(),
        ).qos_profile  # fmt: skip
        self.get_logger().info(
            f'{stream} camera: {topic} (QoS reliability={qos.reliability.name.lower()}, '
            f'history={qos.history.name.lower()}, depth={qos.depth})'
        )

    def _log_start(self) -> None:
        p, params = self.predictor, self.params
        self.get_logger().info(
            f'mode {params.mode}, device {p.device}, precision {params.precision}, input '
            f'{p.input_size[1]}x{p.input_size[0]}, model {params.model or "(default model)"}: '
            f'{len(p.seg_classes or [])} segmentation / {len(p.det_classes or [])} detection '
            'classes'
        )

    # ------------------------------------------------------------ callbacks
    def _on_image(self, stream: str, msg: Image) -> None:
        """Decode and check (cheap), then hand over; never blocks on inference."""
        try:
            image = DECODERS[stream](msg)
            if image.size == 0:
                raise conv.ImageConversionError(f'empty image {msg.width}x{msg.height}')
        except conv.ImageConversionError as err:
            problem = 'encoding' if msg.encoding not in ACCEPTED[stream] else 'layout'
            self._skip(self._topics[stream], problem, str(err))
            return
        frame = Frame(stream, msg.header, image, conv.stamp_seconds(msg.header))
        if not self._seen:  # liveness counts from the first image, not from start-up
            self.watch = StreamWatch(self.params.streams, self.watch.stale_after)
        self.watch.tick(stream)
        self._seen.add(stream)
        self.stats.arrived(stream)
        other = 'thermal' if stream == 'rgb' else 'rgb'
        if len(self.params.streams) == 1 or other in self.watch.stale_streams():
            self.slot.put(frame)  # one camera: no pairing
            return
        pair = self.sync.add(stream, frame.stamp, frame)
        if pair is None:
            return
        rgb_hw, thermal_hw = pair.rgb.image.shape[:2], pair.thermal.image.shape[:2]
        if self.params.homography is None and rgb_hw != thermal_hw:
            self._skip(
                'rgb+thermal',
                'size',
                f'RGB image {rgb_hw[1]}x{rgb_hw[0]} and thermal image {thermal_hw[1]}x'
                f'{thermal_hw[0]} differ: fusion needs pixel-aligned images of one size '
                'or the homography parameter',
            )
            return
        self.stats.paired(pair.skew)
        self.slot.put(pair)

    def _on_bad_qos(self, topic: str, info: Any) -> None:
        self.stats.qos_incompatible()
        policy = getattr(info.last_policy_kind, 'name', info.last_policy_kind)
        self.get_logger().error(
            f'QoS incompatible on {topic}: a publisher cannot match this subscription '
            f'({policy} policy; subscription reliability {self.params.qos_reliability}), so '
            'its images never arrive. Set qos.reliability (or qos_overrides) to match the '
            'camera, e.g. best_effort for camera drivers'
        )

    def _on_set_parameters(self, parameters: list[Any]) -> SetParametersResult:
        """Apply the dynamic parameters (rclpy has already checked read-only and ranges)."""
        for parameter in parameters:
            if parameter.name == 'score_threshold':
                self.predictor.config.score_threshold = parameter.value
            elif parameter.name == 'nms_iou':
                self.predictor.config.nms_iou = parameter.value
            elif parameter.name == 'stale_after':
                self.watch.stale_after = parameter.value
            elif parameter.name == 'publish_color':
                self.params.publish_color = parameter.value
        return SetParametersResult(successful=True)

    def _skip(self, topic: str, problem: str, detail: str) -> None:
        """Count a skipped input; log it once per topic and problem per minute."""
        self.stats.bad_input()
        now = time.monotonic()
        if now - self._logged.get((topic, problem), -LOG_EVERY) >= LOG_EVERY:
            self._logged[(topic, problem)] = now
            self.get_logger().warn(
                f'skipping bad input on {topic} ({problem}): {detail}; '
                f'not logged again for {LOG_EVERY:.0f} s'
            )

    # ------------------------------------------------------------- worker
    def _work(self) -> None:
        """The inference thread: newest pair (or frame) in, messages out, until closed."""
        while True:
            job = self.slot.get(timeout=0.5)
            if job is None:
                if self.slot.closed:
                    return
                continue
            try:
                self._infer(job)
            except Exception as err:  # the node never dies on input
                self._skip('inference', type(err).__name__, str(err))

    def _infer(self, job: Pair | Frame) -> None:
        start = time.perf_counter()
        if isinstance(job, Pair):
            reference, rgb, thermal, mode = job.rgb, job.rgb.image, job.thermal.image, 'fused'
        else:
            reference, mode = job, job.stream
            rgb, thermal = (job.image, None) if job.stream == 'rgb' else (None, job.image)
        prediction = self.predictor.predict(rgb, thermal, mode)
        header = reference.header
        if prediction.mask is not None:
            encoding = conv.mask_encoding(len(self.predictor.seg_classes))
            self._seg_pub.publish(conv.fill_image(Image(), prediction.mask, encoding, header))
            if self.params.publish_color and self._color_pub.get_subscription_count() > 0:
                overlay = colorize(prediction.mask, self.predictor.palette, reference.image)
                self._color_pub.publish(conv.fill_image(Image(), overlay, 'rgb8', header))
        self._det_pub.publish(fill_detections(Detection2DArray(), prediction.detections, header))
        latency = self.get_clock().now().nanoseconds * 1e-9 - reference.stamp
        self.stats.processed(prediction.mode, time.perf_counter() - start, latency)

    # ---------------------------------------------------------- diagnostics
    def _watch_cameras(self) -> None:
        """10 Hz: log cameras going stale / coming back; publish diagnostics."""
        changes = self.watch.poll() if self._seen else []
        for change in changes:
            live = self.watch.live_streams()
            warn, text = change_message(change, self.params.mode, live, self._seen)
            if warn:  # two calls: rclpy fixes one severity per call site
                self.get_logger().warn(text)
            else:
                self.get_logger().info(text)
        now = time.monotonic()
        if changes or now >= self._next_diagnostics:
            self._next_diagnostics = now + self.params.diagnostics_period
            self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        streams = self.params.streams
        live = self.watch.live_streams() if self._seen else ()
        state = camera_state(self.params.mode, streams, live, self._seen)
        rates = {s: self.watch.rate(s) for s in streams}
        name = f'{self.get_fully_qualified_name()}: pipeline'
        counters = self.stats, self.slot.stats(), self.sync.stats()
        report = pipeline_report(
            name, str(self.predictor.device), self.params.mode, state, rates, *counters
        )
        self._diag_pub.publish(fill_diagnostics(DiagnosticArray(), [report], self._now_header()))

    def _now_header(self) -> Header:
        return Header(stamp=self.get_clock().now().to_msg(), frame_id='')

    def destroy_node(self) -> None:
        """Stop the worker (it finishes the pair in hand), then the node."""
        self.slot.close()
        self._worker.join(timeout=10.0)
        super().destroy_node()


def usage() -> str:
    """``perception_node --help``: how to run it and every parameter with its description."""
    lines = ['usage: perception_node [--ros-args -p NAME:=VALUE ... | --params-file FILE]',
             '', f'ROS 2 node {NODE_NAME!r}: synchronised RGB + thermal in, masks and '
             'detections out.', '', 'parameters (read-only unless marked dynamic):']
    for spec in PARAM_SPECS:
        flag = '' if spec.read_only else ' [dynamic]'
        lines.append(f'  {spec.name} (default {spec.default!r}){flag}: {spec.description}')
    return '\n'.join(lines)


def main(
    args: list[str] | None = None, load: Callable[[PredictorConfig], Predictor] = load_predictor
) -> int:
    """Entry point ``perception_node``: init, spin, always shut down."""
    argv = sys.argv[1:] if args is None else args
    user_args = argv[: argv.index('--ros-args')] if '--ros-args' in argv else argv
    if {'-h', '--help'} & set(user_args):
        print(usage())
        return 0
    rclpy.init(args=args)
    try:
        node = PerceptionNode(load)
    except (FileNotFoundError, ValueError) as err:
        get_logger(NODE_NAME).fatal(f'cannot start: {err}')
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
