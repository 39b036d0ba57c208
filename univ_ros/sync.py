"""RGB + thermal stream plumbing without ROS: approximate-time pairing, hand-off, liveness.

Stamps are float seconds and messages are opaque items. No lock is held while user code runs
(nothing here calls back; ``add`` returns the pair), and every buffer is bounded.
"""

import bisect
import itertools
import math
import threading
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

STREAMS = ('rgb', 'thermal')
DEFAULT_SLOP = 0.5 / 30.0  # half a frame at 30 Hz, in seconds

T = TypeVar('T')


@dataclass(frozen=True)
class Pair:
    """One RGB message and one thermal message whose stamps lie within the slop."""

    rgb: Any
    thermal: Any
    rgb_stamp: float
    thermal_stamp: float

    @property
    def skew(self) -> float:
        """Absolute stamp difference in seconds."""
        return abs(self.rgb_stamp - self.thermal_stamp)


@dataclass(frozen=True)
class SyncStats:
    """A consistent snapshot of the synchroniser's counters."""

    added: int  # messages given to add()
    pairs: int  # pairs returned
    misses: int  # messages dropped without being paired
    resets: int  # queue flushes (time jumped backwards, or reset())
    queued: int  # messages waiting now; added == 2 * pairs + misses + queued


class ApproximateTimeSync:
    """Pairs 'rgb' and 'thermal' messages whose stamps differ by at most ``slop`` seconds.

    Each stream keeps a stamp-sorted queue of at most ``queue_size`` unpaired messages. A new
    message pairs with the nearest queued message of the other stream within ``slop``; the
    messages older than the pair in either queue can no longer be emitted in order and are
    dropped. A queued message expires once the other stream's newest stamp is more than
    ``slop + max_lateness`` past it (so a stopped stream's leftovers go, while the live stream
    keeps only its last ``queue_size``). A stamp more than ``reset_jump`` seconds older than its
    stream's newest (a bag loop, a restarted camera) flushes both queues and pairing starts over.

    Args:
        slop: largest stamp difference of a pair, seconds (> 0).
        queue_size: unpaired messages kept per stream (>= 1).
        max_lateness: how far (stamp seconds) a message may trail its stream's newest and still
            find its partner queued (>= 0).
        reset_jump: backward stamp jump, seconds, that resets both queues (> slop + max_lateness).
    """

    def __init__(
        self,
        slop: float = DEFAULT_SLOP,
        queue_size: int = 10,
        max_lateness: float = 0.1,
        reset_jump: float = 1.0,
    ) -> None:
        if not slop > 0:
            raise ValueError(f'slop must be > 0 seconds, got {slop}')
        if queue_size < 1:
            raise ValueError(f'queue_size must be >= 1, got {queue_size}')
        if not max_lateness >= 0:
            raise ValueError(f'max_lateness must be >= 0 seconds, got {max_lateness}')
        if not reset_jump > slop + max_lateness:
            raise ValueError(
                f'reset_jump must exceed slop + max_lateness ({slop + max_lateness}), '
                f'got {reset_jump}'
            )
        self.slop = slop
        self.queue_size = queue_size
        self.max_lateness = max_lateness
        self.reset_jump = reset_jump
        self._lock = threading.Lock()
        self._seq = itertools.count()  # tie-breaker: queued items themselves are never compared
        self._queues: dict[str, list[tuple[float, int, Any]]] = {s: [] for s in STREAMS}
        self._newest: dict[str, float] = {s: -math.inf for s in STREAMS}
        self._paired_until: dict[str, float] = {s: -math.inf for s in STREAMS}
        self._added = self._pairs = self._misses = self._resets = 0

    def add(self, stream: str, stamp: float, item: Any) -> Pair | None:
        """Queue ``item`` of ``stream`` ('rgb' or 'thermal') stamped ``stamp`` (seconds).

        Returns:
            The pair this message completed, or None.
        """
        if stream not in STREAMS:
            raise ValueError(f'stream must be one of {STREAMS}, got {stream!r}')
        stamp = float(stamp)
        if not math.isfinite(stamp):
            raise ValueError(f'stamp of {stream} must be finite seconds, got {stamp}')
        with self._lock:
            self._added += 1
            if stamp < self._newest[stream] - self.reset_jump:
                self._flush_locked()
            self._newest[stream] = max(self._newest[stream], stamp)
            if stamp <= self._paired_until[stream]:
                self._misses += 1  # older than a pair already emitted
                return None
            pair = self._match_locked(stream, stamp, item)
            if pair is None:
                queue = self._queues[stream]
                bisect.insort(queue, (stamp, next(self._seq), item))
                if len(queue) > self.queue_size:
                    del queue[0]
                    self._misses += 1
            self._expire_locked()
            return pair

    def reset(self) -> None:
        """Drop every queued message (counted as misses) and forget all stamps."""
        with self._lock:
            self._flush_locked()

    def stats(self) -> SyncStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            queued = sum(len(q) for q in self._queues.values())
            return SyncStats(self._added, self._pairs, self._misses, self._resets, queued)

    def _match_locked(self, stream: str, stamp: float, item: Any) -> Pair | None:
        other = STREAMS[1 - STREAMS.index(stream)]
        queue = self._queues[other]
        index = bisect.bisect_left(queue, stamp, key=lambda entry: entry[0])
        candidates = [i for i in (index - 1, index) if 0 <= i < len(queue)]
        if not candidates:
            return None
        best = min(candidates, key=lambda i: abs(queue[i][0] - stamp))
        if abs(queue[best][0] - stamp) > self.slop:
            return None
        other_stamp, _, other_item = queue[best]
        self._misses += best  # the other stream's older messages can no longer be emitted
        del queue[: best + 1]
        own = self._queues[stream]
        older = bisect.bisect_right(own, stamp, key=lambda entry: entry[0])
        self._misses += older
        del own[:older]
        self._paired_until[stream] = stamp
        self._paired_until[other] = other_stamp
        self._pairs += 1
        if stream == 'rgb':
            return Pair(item, other_item, stamp, other_stamp)
        return Pair(other_item, item, other_stamp, stamp)

    def _expire_locked(self) -> None:
        for index, stream in enumerate(STREAMS):
            horizon = self._newest[STREAMS[1 - index]] - self.slop - self.max_lateness
            queue = self._queues[stream]
            expired = bisect.bisect_left(queue, horizon, key=lambda entry: entry[0])
            self._misses += expired
            del queue[:expired]

    def _flush_locked(self) -> None:
        for stream in STREAMS:
            self._misses += len(self._queues[stream])
            self._queues[stream].clear()
            self._newest[stream] = -math.inf
            self._paired_until[stream] = -math.inf
        self._resets += 1


@dataclass(frozen=True)
class SlotStats:
    """A consistent snapshot of a LatestSlot's counters: put == dropped + taken + waiting."""

    put: int  # items given to put()
    dropped: int  # items replaced before a get(), or put after close()
    taken: int  # items returned by get()
    waiting: int  # 1 if an item is waiting now, else 0


class LatestSlot(Generic[T]):
    """A one-item buffer between producers (callbacks) and one worker: newest wins.

    ``put`` never blocks; it replaces a waiting item, which counts as dropped. ``get`` blocks
    until an item, ``close()`` or the timeout. After ``close()`` a waiting item is still handed
    out, then ``get`` returns None at once, so a worker loop ends with
    ``if item is None and slot.closed: break``.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._item: T | None = None
        self._closed = False
        self._put = self._dropped = self._taken = 0

    def put(self, item: T) -> None:
        """Offer ``item`` (not None); replaces (drops) any item still waiting."""
        if item is None:
            raise ValueError('LatestSlot.put: item must not be None (None means "no item")')
        with self._cond:
            self._put += 1
            if self._closed:
                self._dropped += 1
                return
            if self._item is not None:
                self._dropped += 1
            self._item = item
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> T | None:
        """Take the waiting item, waiting up to ``timeout`` seconds (None: until one comes).

        Returns:
            The item, or None on timeout or when closed and empty.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            item, self._item = self._item, None
            if item is not None:
                self._taken += 1
            return item

    def close(self) -> None:
        """Wake the worker; later puts are dropped."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """True once close() was called."""
        with self._cond:
            return self._closed

    def stats(self) -> SlotStats:
        """A consistent snapshot of the counters."""
        with self._cond:
            waiting = int(self._item is not None)
            return SlotStats(self._put, self._dropped, self._taken, waiting)
