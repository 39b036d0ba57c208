"""Counters and timings of the perception pipeline, and its diagnostic status (no ROS imports).

:class:`PipelineStats` is fed by the node's callbacks and worker thread; :func:`pipeline_report`
turns it, the slot and sync counters and the camera health into one
:class:`~univ_ros.messages.StatusReport` for ``/diagnostics``.
"""

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence

from univ_ros.messages import StatusReport
from univ_ros.stream_watch import StreamChange
from univ_ros.sync import SlotStats, SyncStats

WINDOW = 30  # recent pairs averaged for processing time and latencies


class PipelineStats:
    """Thread-safe counters and recent timings; every buffer is bounded."""

    def __init__(self, streams: Sequence[str]) -> None:
        self.streams = tuple(streams)
        self._lock = threading.Lock()
        self._last_good: dict[str, float | None] = dict.fromkeys(self.streams)
        self._frames: Counter[str] = Counter()  # every image received, good or bad
        self._bad_frames: Counter[str] = Counter()
        self._processing: deque[float] = deque(maxlen=WINDOW)
        self._latency: deque[float] = deque(maxlen=WINDOW)
        self._input_age: deque[float] = deque(maxlen=WINDOW)
        self._skew = math.nan
        self._by_mode: Counter[str] = Counter()
        self._failed = self._unpaired = self._masked = self._qos_incompatible = 0

    def received(self, stream: str) -> None:
        """An image of ``stream`` reached a callback (before any check)."""
        with self._lock:
            self._frames[stream] += 1

    def good(self, stream: str, masked_pixels: int = 0) -> None:
        """A usable image of ``stream`` (``masked_pixels`` non-finite pixels were masked)."""
        with self._lock:
            self._last_good[stream] = time.monotonic()
            self._masked += masked_pixels

    def bad(self, stream: str) -> None:
        """An image of ``stream`` was unusable and skipped."""
        with self._lock:
            self._bad_frames[stream] += 1

    def unpaired(self) -> None:
        """A pair could not be fused (image sizes differ) and was skipped."""
        with self._lock:
            self._unpaired += 1

    def paired(self, skew: float) -> None:
        """A pair was formed; ``skew``: |RGB stamp - thermal stamp| in seconds."""
        with self._lock:
            self._skew = skew

    def processed(self, mode: str, seconds: float, latency: float, input_age: float) -> None:
        """A job ran in ``mode`` and its outputs were published.

        Args:
            mode: the mode run (fused | rgb | thermal).
            seconds: inference + publishing time.
            latency: from the node receiving the job's newest image to its outputs published.
            input_age: node clock at reception minus the reference image's stamp.
        """
        with self._lock:
            self._by_mode[mode] += 1
            self._processing.append(seconds)
            self._latency.append(latency)
            self._input_age.append(input_age)

    def failed(self) -> None:
        """Inference or publishing raised for a job."""
        with self._lock:
            self._failed += 1

    def qos_incompatible(self) -> None:
        """A publisher's QoS could not be matched."""
        with self._lock:
            self._qos_incompatible += 1

    @property
    def done(self) -> int:
        """Jobs finished, published or failed."""
        with self._lock:
            return sum(self._by_mode.values()) + self._failed

    def values(self) -> dict[str, object]:
        """A consistent snapshot as diagnostic key -> value."""
        now = time.monotonic()
        with self._lock:
            values: dict[str, object] = {}
            for stream in self.streams:
                last = self._last_good[stream]
                values[f'{stream}_frames'] = self._frames[stream]
                values[f'{stream}_bad_frames'] = self._bad_frames[stream]
                values[f'{stream}_age_s'] = 'never' if last is None else now - last
            values['processing_ms'] = _mean_ms(self._processing)
            values['latency_ms'] = _mean_ms(self._latency)
            values['input_age_ms'] = _mean_ms(self._input_age)
            values['skew_ms'] = 1e3 * self._skew
            values['pairs_processed'] = sum(self._by_mode.values())
            for mode in ('fused', 'rgb', 'thermal'):
                values[f'processed_{mode}'] = self._by_mode[mode]
            values['pairs_failed'] = self._failed
            values['bad_inputs'] = sum(self._bad_frames.values()) + self._unpaired
            values['thermal_masked_pixels'] = self._masked
            values['qos_incompatible'] = self._qos_incompatible
            return values


def _mean_ms(seconds: deque) -> float:
    return 1e3 * sum(seconds) / len(seconds) if seconds else math.nan


def camera_state(
    mode: str, streams: Sequence[str], live: Sequence[str], seen: set[str],
    reasons: Mapping[str, str],
) -> tuple[str, str, str]:
    """What runs, given the requested mode and the usable cameras.

    Args:
        mode: requested mode (fused | rgb | thermal | auto).
        streams: cameras subscribed.
        live: cameras usable now (a good image within stale_after).
        seen: cameras that ever sent a good image.
        reasons: camera -> why it is not usable ('silent for 0.7 s', 'bad frames: ...').

    Returns:
        (level name, state: fused | rgb | thermal | waiting, message).
    """
    unusable = [s for s in streams if s not in live]
    why = '; '.join(f'{s} camera {reasons.get(s, "")}' for s in unusable)
    if not live:
        never = [s for s in streams if s not in seen]
        if never and len(never) == len(streams):
            return 'WARN', 'waiting', f'no image yet from {", ".join(never)}'
        return 'WARN', 'waiting', f'no usable camera: {why}'
    if not unusable:
        state = 'fused' if len(streams) == 2 else streams[0]
        return 'OK', state, f'running {state}'
    missing = unusable[0]
    level = 'OK' if mode == 'auto' and missing not in seen else 'WARN'
    return level, live[0], f'{why}: running on {live[0]} only'


def change_message(
    change: StreamChange, mode: str, live: Sequence[str], seen: set[str]
) -> tuple[bool, str]:
    """(warn?, log line) for a camera becoming unusable or usable again.

    Unusable is a warning, except in auto mode for a camera that never sent an image.
    """
    if not change.stale:
        return False, f'{change.stream} camera is back'
    then = f'continuing on {live[0]}' if live else 'no camera left, waiting'
    warn = not (mode == 'auto' and change.stream not in seen)
    return warn, f'{change.stream} camera unusable ({change.reason}): {then}'


def pipeline_report(
    name: str,
    hardware_id: str,
    head: Mapping[str, object],
    state: tuple[str, str, str],
    rates: Mapping[str, float],
    stats: PipelineStats,
    slot: SlotStats,
    sync: SyncStats,
) -> StatusReport:
    """The pipeline's DiagnosticStatus.

    ``pairs_in`` counts what reached the one-slot buffer (pairs, or single images while one
    camera is unusable); ``pairs_in == pairs_processed + pairs_failed + pairs_dropped +
    pairs_waiting + pairs_in_progress``. ``{camera}_frames`` counts every image received,
    ``{camera}_bad_frames`` those skipped. ``head`` holds the values listed first (requested
    mode, model state, slop, ...).
    """
    level, state_name, message = state
    values = stats.values()
    if values['qos_incompatible']:
        # an error while it may be why images are missing; once the cameras stream (another
        # publisher on the topic mismatched, or the camera restarted), a warning that stays
        level = 'WARN' if level == 'OK' else 'ERROR'
        message += f'; {values["qos_incompatible"]} incompatible QoS event(s): see the log'
    done = int(values['pairs_processed']) + int(values['pairs_failed'])
    report: dict[str, object] = {'state': state_name, **head}
    report.update({f'{s}_rate_hz': rate for s, rate in rates.items()})
    report.update(
        {
            'pairs_in': slot.put,
            'pairs_dropped': slot.dropped,
            'pairs_waiting': slot.waiting,
            'pairs_in_progress': max(0, slot.taken - done),
            'sync_misses': sync.misses,
            'sync_resets': sync.resets,
        }
    )
    return StatusReport(name, level, message, hardware_id, {**report, **values})
