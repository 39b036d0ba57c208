"""StreamWatch: per-camera arrival times and rates, for graceful degradation (no ROS)."""

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from univ_ros.sync import STREAMS


@dataclass(frozen=True)
class StreamChange:
    """A stream that went stale (``stale=True``) or came back (``stale=False``)."""

    stream: str
    stale: bool
    silent_for: float  # seconds since its last message (since the watch started if none yet)


class StreamWatch:
    """Per-stream arrival times and rates on a monotonic clock, for graceful degradation.

    A stream is stale when nothing arrived for ``stale_after`` seconds (counted from the watch's
    creation until its first message). Thread-safe.

    Args:
        streams: stream names, e.g. ('rgb', 'thermal').
        stale_after: silence in seconds after which a stream is stale (> 0).
        clock: monotonic seconds (injectable for tests).
        rate_window: arrivals kept per stream for the rate estimate (>= 2).
    """

    def __init__(
        self,
        streams: Sequence[str] = STREAMS,
        stale_after: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        rate_window: int = 30,
    ) -> None:
        if not stale_after > 0:
            raise ValueError(f'stale_after must be > 0 seconds, got {stale_after}')
        if rate_window < 2:
            raise ValueError(f'rate_window must be >= 2 arrivals, got {rate_window}')
        if not streams or len(set(streams)) != len(streams):
            raise ValueError(f'streams must be distinct names, got {streams!r}')
        self.streams = tuple(streams)
        self.stale_after = stale_after
        self._clock = clock
        self._lock = threading.Lock()
        start = clock()
        self._last = {s: start for s in self.streams}
        self._arrivals = {s: deque(maxlen=rate_window) for s in self.streams}
        self._reported_stale = dict.fromkeys(self.streams, False)

    def tick(self, stream: str) -> None:
        """Record that a message of ``stream`` arrived now."""
        self._check(stream)
        now = self._clock()
        with self._lock:
            arrivals = self._arrivals[stream]
            if arrivals and now - arrivals[-1] > self.stale_after:
                arrivals.clear()  # a gap: the old arrivals would understate the rate
            arrivals.append(now)
            self._last[stream] = now

    def rate(self, stream: str) -> float:
        """Arrival rate in Hz over the recent window; 0.0 if stale or fewer than 2 arrivals."""
        self._check(stream)
        now = self._clock()
        with self._lock:
            arrivals = self._arrivals[stream]
            if now - self._last[stream] > self.stale_after or len(arrivals) < 2:
                return 0.0
            span = arrivals[-1] - arrivals[0]
            return (len(arrivals) - 1) / span if span > 0 else 0.0

    def stale_streams(self) -> tuple[str, ...]:
        """Streams silent for more than ``stale_after`` seconds, in declaration order."""
        now = self._clock()
        with self._lock:
            return tuple(s for s in self.streams if now - self._last[s] > self.stale_after)

    def live_streams(self) -> tuple[str, ...]:
        """Streams that are not stale, in declaration order."""
        stale = self.stale_streams()
        return tuple(s for s in self.streams if s not in stale)

    def mode(self) -> str:
        """'fused' if every stream is live, the one live stream's name, or 'none'."""
        live = self.live_streams()
        if len(live) == len(self.streams):
            return 'fused'
        return live[0] if len(live) == 1 else 'none'

    def poll(self) -> list[StreamChange]:
        """Transitions since the previous poll, each reported once (WARN stale, INFO back)."""
        now = self._clock()
        changes = []
        with self._lock:
            for stream in self.streams:
                silent = now - self._last[stream]
                stale = silent > self.stale_after
                if stale != self._reported_stale[stream]:
                    self._reported_stale[stream] = stale
                    changes.append(StreamChange(stream, stale, silent))
        return changes

    def _check(self, stream: str) -> None:
        if stream not in self._last:
            raise ValueError(f'stream must be one of {self.streams}, got {stream!r}')
