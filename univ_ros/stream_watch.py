"""StreamWatch: per-camera health (good images, bad images, rate), for degradation (no ROS)."""

import itertools
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from univ_ros.sync import STREAMS

RATE_WINDOW = 2.0  # seconds of arrivals behind the rate estimate


@dataclass(frozen=True)
class StreamChange:
    """A stream that became unusable (``stale=True``) or usable again (``stale=False``)."""

    stream: str
    stale: bool
    reason: str  # why it is stale ('silent for 0.6 s', 'bad frames: ...'); '' when back


class StreamWatch:
    """Per-stream arrivals on a monotonic clock: which cameras are usable, and why not.

    A stream is usable (live) while it delivered a *good* image within the last ``stale_after``
    seconds (counted from the watch's creation or :meth:`restart` until its first one). A
    stream sending only bad images (undecodable, wrong size, not finite) is as unusable as a
    silent one; :meth:`reason` tells the two apart. The rate is the camera's: measured on
    the header stamps of the images that arrived in the last :data:`RATE_WINDOW` seconds, so
    callbacks that stall and then run in a burst, and frames lost on the way, neither lower
    nor inflate it. Arrivals without a stamp (bad images, unset headers) are counted over the
    whole window instead. Thread-safe.

    Args:
        streams: stream names, e.g. ('rgb', 'thermal').
        stale_after: seconds without a good image after which a stream is stale (> 0).
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        streams: Sequence[str] = STREAMS,
        stale_after: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not stale_after > 0:
            raise ValueError(f'stale_after must be > 0 seconds, got {stale_after}')
        if not streams or len(set(streams)) != len(streams):
            raise ValueError(f'streams must be distinct names, got {streams!r}')
        self.streams = tuple(streams)
        self.stale_after = stale_after
        self._clock = clock
        self._lock = threading.Lock()
        # (arrival time, header stamp or None) of the last RATE_WINDOW s
        self._arrivals: dict[str, deque[tuple[float, float | None]]] = {
            s: deque() for s in self.streams}
        self._first: dict[str, float] = {}  # first arrival of each stream
        self._reported_stale = dict.fromkeys(self.streams, False)
        self._good = dict.fromkeys(self.streams, clock())  # last good image (or grace start)
        self._bad: dict[str, tuple[float, str]] = {}  # last bad image: (time, why)

    def restart(self) -> None:
        """Start a grace period for the cameras that fell silent together (pause, start-up).

        Live for ``stale_after`` from now: every stream whose last good image is within
        ``stale_after`` of the latest one (a common pause, or start-up: none yet).

        A stream that was silent longer stays stale until it sends an image itself, so it is
        neither reported back nor waited for.
        """
        now = self._clock()
        with self._lock:
            latest = max(self._good.values())
            self._good = {s: now if latest - t <= self.stale_after else t
                          for s, t in self._good.items()}
            self._bad = {}

    def tick(self, stream: str, stamp: float | None = None) -> None:
        """A good image of ``stream`` arrived now; ``stamp``: its header stamp, seconds."""
        now = self._arrived(stream, stamp)
        with self._lock:
            self._good[stream] = now

    def bad(self, stream: str, why: str) -> None:
        """A bad image of ``stream`` arrived now; ``why`` says what was wrong with it."""
        now = self._arrived(stream, None)
        with self._lock:
            self._bad[stream] = (now, why)

    def rate(self, stream: str) -> float:
        """Images per second of the last :data:`RATE_WINDOW` s of arrivals (0.0 while silent).

        From their header stamps when all have one: one over the median interval between
        consecutive stamps (the camera's clock), so node-side stalls cancel out and frames lost
        on the way (a few double intervals) do not lower it; ``{camera}_frames`` counts what
        arrived. Otherwise arrivals counted over the whole window, not between the first and
        last one, so callbacks that run late and in bursts do not inflate it.
        """
        self._check(stream)
        now = self._clock()
        with self._lock:
            arrivals, first = self._trim(stream, now), self._first.get(stream)
            if not arrivals or first is None or now - arrivals[-1][0] > self.stale_after:
                return 0.0
            stamps = [stamp for _, stamp in arrivals]
            if None not in stamps:
                intervals = [b - a for a, b in itertools.pairwise(stamps) if b > a]
                if intervals:  # the median: a lost frame's double interval is an outlier
                    return 1.0 / statistics.median(intervals)
            if now - first >= RATE_WINDOW:
                return len(arrivals) / RATE_WINDOW
            return (len(arrivals) - 1) / (now - first) if now > first else 0.0

    def stale_streams(self) -> tuple[str, ...]:
        """Streams without a good image for more than ``stale_after`` s, in declared order."""
        now = self._clock()
        with self._lock:
            return tuple(s for s in self.streams if now - self._good[s] > self.stale_after)

    def live_streams(self) -> tuple[str, ...]:
        """Streams that are not stale, in declaration order."""
        stale = self.stale_streams()
        return tuple(s for s in self.streams if s not in stale)

    def reason(self, stream: str) -> str:
        """Why ``stream`` is stale: 'bad frames: <last problem>' or 'silent for X s'."""
        now = self._clock()
        with self._lock:
            bad = self._bad.get(stream)
            if bad is not None and now - bad[0] <= self.stale_after:
                return f'bad frames: {bad[1]}'
            return f'silent for {now - max(self._good[stream], bad[0] if bad else 0.0):.1f} s'

    def poll(self) -> list[StreamChange]:
        """Transitions since the previous poll, each reported once."""
        stale = set(self.stale_streams())
        changes = []
        for stream in self.streams:
            if (stream in stale) != self._reported_stale[stream]:
                self._reported_stale[stream] = stream in stale
                why = self.reason(stream) if stream in stale else ''
                changes.append(StreamChange(stream, stream in stale, why))
        return changes

    def _arrived(self, stream: str, stamp: float | None) -> float:
        self._check(stream)
        now = self._clock()
        stamp = stamp if stamp is not None and stamp > 0 else None  # 0: header never set
        with self._lock:
            self._first.setdefault(stream, now)
            arrivals = self._arrivals[stream]
            if stamp is not None and arrivals and (arrivals[-1][1] or 0.0) > stamp:
                arrivals.clear()  # stamps went back (a bag looping, a clock reset): start over
            arrivals.append((now, stamp))
            self._trim(stream, now)
        return now

    def _trim(self, stream: str, now: float) -> deque:
        arrivals = self._arrivals[stream]
        while arrivals and arrivals[0][0] < now - RATE_WINDOW:
            arrivals.popleft()
        return arrivals

    def _check(self, stream: str) -> None:
        if stream not in self.streams:
            raise ValueError(f'stream must be one of {self.streams}, got {stream!r}')
