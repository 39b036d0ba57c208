"""The perception pipeline without ROS: camera images in, predictions out, health reported.

Both nodes (:mod:`univ_ros.perception_node`, :mod:`univ_ros.lifecycle_node`) feed decoded
images into :class:`Pipeline` from their subscription callbacks and get each prediction back
through a ``publish`` callback, called from the pipeline's one worker thread. In between:

- camera health: an image that cannot be used (undecodable, a thermal image of another size
  than the RGB one without a homography, a thermal frame mostly NaN/inf) is a *bad frame*; a
  camera with no good image for ``stale_after`` s (silent, or sending only bad frames) is
  unusable and fused/auto continue on the other one (:class:`~univ_ros.stream_watch.StreamWatch`
  says which, and why); a few NaN/inf thermal pixels are masked, not fatal to the pair;
- pairing by stamp (:class:`~univ_ros.sync.ApproximateTimeSync`) and the one-slot hand-over to
  the worker (:class:`~univ_ros.sync.LatestSlot`): pairs that wait while the worker is busy are
  replaced by newer ones and counted as dropped; nothing queues without bound;
- logging with a throttle per (topic, problem): every distinct problem is logged once, then at
  most once per :data:`LOG_EVERY` s with the count of repeats.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from univ_ros.messages import StatusReport
from univ_ros.params import NodeParams
from univ_ros.perception_status import (
    PipelineStats,
    camera_state,
    change_message,
    pipeline_report,
)
from univ_ros.stream_watch import StreamWatch
from univ_ros.sync import ApproximateTimeSync, LatestSlot, Pair

LOG_EVERY = 60.0  # seconds between two log lines about the same problem on the same topic
Log = Callable[[str, str], None]  # (level 'info' | 'warn' | 'error', text)


@dataclass(frozen=True)
class Frame:
    """One decoded camera image and what the node knew when it arrived."""

    stream: str  # 'rgb' | 'thermal'
    header: Any  # std_msgs/Header of the camera image
    image: np.ndarray  # (H, W, 3) uint8 RGB, or (H, W) uint8 | uint16 | float32 thermal
    stamp: float  # header stamp, seconds
    received: float  # time.monotonic() when the callback got it
    age: float  # node clock at reception minus the stamp, seconds


class LogThrottle:
    """Whether a problem may be logged now: once per key, then once per ``period`` seconds."""

    def __init__(self, period: float = LOG_EVERY) -> None:
        self.period = period
        self._lock = threading.Lock()
        self._last: dict[tuple, float] = {}
        self._repeats: dict[tuple, int] = {}

    def allow(self, key: tuple) -> tuple[bool, int]:
        """(log it now?, repeats not logged since the previous line)."""
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -self.period) < self.period:
                self._repeats[key] = self._repeats.get(key, 0) + 1
                return False, 0
            self._last[key] = now
            return True, self._repeats.pop(key, 0)


class Pipeline:
    """Images in (callbacks), one worker thread running ``predict``, ``publish`` out.

    Args:
        params: the node's parameters (streams, mode, slop, stale_after, homography).
        predict: ``Predictor.predict(rgb, thermal, mode) -> Prediction``.
        publish: called by the worker with (reference Frame, Prediction).
        log: ``log(level, text)``, level 'info' | 'warn' | 'error'.
        topics: camera -> topic name used in log lines.
        alive: False once the node is shutting down (then a failing publish is no problem).
    """

    def __init__(self, params: NodeParams, predict: Callable, publish: Callable, log: Log,
                 topics: dict[str, str], alive: Callable[[], bool] = lambda: True) -> None:
        self.params = params
        self.predict = predict
        self._publish, self._log, self.topics, self._alive = publish, log, topics, alive
        self.sync = ApproximateTimeSync(params.sync_slop or None)  # 0: auto
        self.slot: LatestSlot[Pair | Frame] = LatestSlot()
        self.watch = StreamWatch(params.streams, params.stale_after)
        self.stats = PipelineStats(params.streams)
        self.throttle = LogThrottle()
        self.seen: set[str] = set()  # cameras that sent at least one good image
        self._rgb_hw: tuple[int, int] | None = None  # size of the last good RGB image
        self._worker: threading.Thread | None = None

    # ------------------------------------------------------------- input side
    def received(self, stream: str) -> None:
        """Count an image of ``stream`` as received (call before decoding it)."""
        self.stats.received(stream)

    def bad_frame(self, stream: str, kind: str, detail: str) -> None:
        """An image of ``stream`` was unusable: ``kind`` names the problem, ``detail`` says it."""
        self.stats.bad(stream)
        self.watch.bad(stream, detail)
        self.problem(self.topics[stream], kind, f'skipping bad input on {self.topics[stream]} '
                     f'({kind}): {detail}')

    def frame(self, frame: Frame) -> None:
        """A decoded image: check it, then pair it (or hand it over alone)."""
        masked = 0
        if frame.stream == 'thermal':
            checked = self._check_thermal(frame)
            if checked is None:
                return
            frame, masked = checked
        elif frame.stream == 'rgb':
            self._rgb_hw = frame.image.shape[:2]
        if not self.watch.live_streams():  # start-up, or every camera was silent: liveness
            self.watch.restart()  # counts from this first image, so its partner is awaited
        self.seen.add(frame.stream)
        self.watch.tick(frame.stream, frame.stamp)
        self.stats.good(frame.stream, masked)
        other = 'thermal' if frame.stream == 'rgb' else 'rgb'
        if len(self.params.streams) == 1 or other in self.watch.stale_streams():
            self.slot.put(frame)  # one camera usable: no pairing
            return
        pair = self.sync.add(frame.stream, frame.stamp, frame)
        while pair is not None:
            self._hand_over(pair)
            pair = self.sync.pop_ready()

    def _check_thermal(self, frame: Frame) -> tuple[Frame, int] | None:
        """(frame with non-finite pixels masked, pixels masked), or None for a bad frame."""
        from univ_core.inference.validation import finite_thermal

        try:
            image, masked = finite_thermal(frame.image, 'thermal image')
        except ValueError as err:
            self.bad_frame('thermal', 'non_finite', str(err))
            return None
        if masked:
            self.problem(self.topics['thermal'], 'non_finite_masked',
                         f'{self.topics["thermal"]}: {masked} NaN/inf pixels masked (replaced by '
                         'finite values); the frame is used', level='info')
        h, w = image.shape[:2]
        if (len(self.params.streams) == 2 and self.params.aligned and self._rgb_hw is not None
                and (h, w) != self._rgb_hw and 'rgb' in self.watch.live_streams()):
            rh, rw = self._rgb_hw
            self.bad_frame('thermal', 'size', f'size {w}x{h} vs {rw}x{rh} of the RGB camera '
                           '(pixel-aligned fusion needs one size, or set the homography)')
            return None
        return Frame(frame.stream, frame.header, image, frame.stamp, frame.received,
                     frame.age), masked

    def _hand_over(self, pair: Pair) -> None:
        rgb_hw, thermal_hw = pair.rgb.image.shape[:2], pair.thermal.image.shape[:2]
        if self.params.aligned and rgb_hw != thermal_hw:  # the RGB size changed meanwhile
            self.stats.unpaired()
            self.problem('rgb+thermal', 'size', f'skipping a pair: RGB {rgb_hw[1]}x{rgb_hw[0]} '
                         f'and thermal {thermal_hw[1]}x{thermal_hw[0]} differ')
            return
        self.stats.paired(pair.skew)
        self.slot.put(pair)

    def problem(self, topic: str, kind: str, text: str, level: str = 'warn') -> None:
        """Log ``text`` unless (topic, kind) was logged within :data:`LOG_EVERY` s."""
        allowed, repeats = self.throttle.allow((topic, kind))
        if allowed:
            again = f' ({repeats} more since the last line)' if repeats else ''
            self._log(level, f'{text}{again}; not logged again for {LOG_EVERY:.0f} s')

    # ------------------------------------------------------------- worker side
    def start(self) -> None:
        """Start the worker thread."""
        self._worker = threading.Thread(target=self._work, name='univ_inference', daemon=True)
        self._worker.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Close the hand-over and wait for the worker (it finishes the job in hand).

        Returns:
            True when the worker ended within ``timeout``.
        """
        self.slot.close()
        if self._worker is not None:
            self._worker.join(timeout)
            return not self._worker.is_alive()
        return True

    def _work(self) -> None:
        while True:
            job = self.slot.get(timeout=0.5)
            if job is None:
                if self.slot.closed:
                    return
                continue
            self._run(job)

    def _run(self, job: Pair | Frame) -> None:
        start = time.monotonic()
        if isinstance(job, Pair):
            reference, rgb, thermal, mode = job.rgb, job.rgb.image, job.thermal.image, 'fused'
            newest = max(job.rgb.received, job.thermal.received)
        else:
            reference, mode, newest = job, job.stream, job.received
            rgb, thermal = (job.image, None) if job.stream == 'rgb' else (None, job.image)
        try:
            prediction = self.predict(rgb, thermal, mode)
            self._publish(reference, prediction)
        except Exception as err:  # the node never dies on input
            if self.slot.closed or not self._alive():
                return  # stopping: publishers may be gone; not a problem of the input
            self.stats.failed()
            self.problem('inference', type(err).__name__,
                         f'inference failed ({type(err).__name__}): {err}', level='error')
            return
        done = time.monotonic()
        self.stats.processed(prediction.mode, done - start, done - newest, reference.age)

    # ------------------------------------------------------------- health
    def poll(self) -> list[tuple[bool, str]]:
        """(warn?, log line) for each camera that became unusable or usable again."""
        changes = self.watch.poll() if self.seen else []
        live = self.watch.live_streams()
        return [change_message(c, self.params.mode, live, self.seen) for c in changes]

    def report(self, name: str, hardware_id: str, head: dict[str, object]) -> StatusReport:
        """The pipeline's diagnostic status (``head``: values listed first)."""
        streams = self.params.streams
        live = self.watch.live_streams() if self.seen else ()
        reasons = {s: self.watch.reason(s) for s in streams if s not in live}
        state = camera_state(self.params.mode, streams, live, self.seen, reasons)
        rates = {s: self.watch.rate(s) for s in streams}
        head = {**head, 'sync_slop_ms': 1e3 * self.sync.slop}
        return pipeline_report(name, hardware_id, head, state, rates, self.stats,
                               self.slot.stats(), self.sync.stats())
