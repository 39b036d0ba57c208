"""Counters and timings of the perception pipeline, and its diagnostic status (no ROS imports).

:class:`PipelineStats` is fed by the node's callbacks and worker thread; :func:`pipeline_report`
turns it, the slot and sync counters and the camera liveness into one
:class:`~univ_ros.messages.StatusReport` for ``/diagnostics``.
"""

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence

from univ_ros.messages import StatusReport
from univ_ros.stream_watch import StreamChange
from univ_ros.sync import SlotStats, SyncStats

WINDOW = 30  # recent pairs averaged for processing time and latency


class PipelineStats:
    """Thread-safe counters and recent timings; every buffer is bounded."""

    def __init__(self, streams: Sequence[str]) -> None:
        self.streams = tuple(streams)
        self._lock = threading.Lock()
        self._last_arrival: dict[str, float | None] = dict.fromkeys(self.streams)
        self._processing: deque[float] = deque(maxlen=WINDOW)
        self._latency: deque[float] = deque(maxlen=WINDOW)
        self._skew = math.nan
        self._by_mode: Counter[str] = Counter()
        self._bad_inputs = 0
        self._qos_incompatible = 0

    def arrived(self, stream: str) -> None:
        """A good image of ``stream`` arrived now."""
        with self._lock:
            self._last_arrival[stream] = time.monotonic()

    def paired(self, skew: float) -> None:
        """A pair was formed; ``skew``: |RGB stamp - thermal stamp| in seconds."""
        with self._lock:
            self._skew = skew

    def processed(self, mode: str, seconds: float, latency: float) -> None:
        """A pair ran in ``mode``: ``seconds`` inference + publishing, ``latency`` stamp -> out."""
        with self._lock:
            self._by_mode[mode] += 1
            self._processing.append(seconds)
            self._latency.append(latency)

    def bad_input(self) -> None:
        """An input was skipped."""
        with self._lock:
            self._bad_inputs += 1

    def qos_incompatible(self) -> None:
        """A publisher's QoS could not be matched."""
        with self._lock:
            self._qos_incompatible += 1

    def values(self) -> dict[str, object]:
        """A consistent snapshot as diagnostic key -> value."""
        now = time.monotonic()
        with self._lock:
            values: dict[str, object] = {}
            for stream, last in self._last_arrival.items():
                values[f'{stream}_age_s'] = 'never' if last is None else now - last
            values['processing_ms'] = _mean_ms(self._processing)
            values['latency_ms'] = _mean_ms(self._latency)
            values['skew_ms'] = 1e3 * self._skew
            for mode in ('fused', 'rgb', 'thermal'):
                values[f'processed_{mode}'] = self._by_mode[mode]
            values['bad_inputs'] = self._bad_inputs
            values['qos_incompatible'] = self._qos_incompatible
            return values


def _mean_ms(seconds: deque) -> float:
    return 1e3 * sum(seconds) / len(seconds) if seconds else math.nan


def camera_state(
    mode: str, streams: Sequence[str], live: Sequence[str], seen: set[str]
) -> tuple[str, str, str]:
    """What runs, given the requested mode and the live cameras.

    Args:
        mode: requested mode (fused | rgb | thermal | auto).
        streams: cameras subscribed.
        live: cameras not stale.
        seen: cameras that ever sent a good image.

    Returns:
        (level name, state: fused | rgb | thermal | waiting, message).
    """
    if not live:
        never = [s for s in streams if s not in seen]
        why = f'no image yet from {", ".join(never)}' if never else 'all cameras silent'
        return 'WARN', 'waiting', why
    if len(live) == len(streams):
        state = 'fused' if len(streams) == 2 else streams[0]
        return 'OK', state, f'running {state}'
    missing = next(s for s in streams if s not in live)
    level = 'OK' if mode == 'auto' and missing not in seen else 'WARN'
    return level, live[0], f'{missing} camera silent: running on {live[0]} only'


def change_message(
    change: StreamChange, mode: str, live: Sequence[str], seen: set[str]
) -> tuple[bool, str]:
    """(warn?, log line) for a camera going stale or coming back.

    Silence is a warning, except in auto mode for a camera that never sent an image.
    """
    if not change.stale:
        return False, f'{change.stream} camera is back'
    then = f'continuing on {live[0]}' if live else 'no camera left, waiting'
    warn = not (mode == 'auto' and change.stream not in seen)
    return warn, f'{change.stream} camera silent for {change.silent_for:.1f} s: {then}'


def pipeline_report(
    name: str,
    hardware_id: str,
    mode: str,
    state: tuple[str, str, str],
    rates: dict[str, float],
    stats: PipelineStats,
    slot: SlotStats,
    sync: SyncStats,
) -> StatusReport:
    """The pipeline's DiagnosticStatus.

    ``pairs_in`` counts what reached the one-slot buffer (pairs, or single images while one
    camera is stale); ``pairs_in == pairs_processed + pairs_dropped + pairs_waiting``.
    """
    level, state_name, message = state
    values = stats.values()
    if values['qos_incompatible']:
        level = 'ERROR'
        message += f'; {values["qos_incompatible"]} incompatible QoS event(s): see the log'
    head: dict[str, object] = {'state': state_name, 'requested_mode': mode}
    head.update({f'{s}_rate_hz': rate for s, rate in rates.items()})
    head.update(
        {
            'pairs_in': slot.put,
            'pairs_processed': slot.taken,
            'pairs_dropped': slot.dropped,
            'pairs_waiting': slot.waiting,
            'sync_misses': sync.misses,
            'sync_resets': sync.resets,
        }
    )
    return StatusReport(name, level, message, hardware_id, {**head, **values})
