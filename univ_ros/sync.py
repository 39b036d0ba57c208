"""RGB + thermal stream plumbing without ROS: approximate-time pairing, hand-off, liveness.

Stamps are float seconds and messages are opaque items. No lock is held while user code runs
(nothing here calls back; ``add`` returns the pair), and every buffer is bounded.
"""

import bisect
import itertools
import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

STREAMS = ('rgb', 'thermal')
DEFAULT_SLOP = 0.5 / 30.0  # half a frame at 30 Hz, in seconds
MAX_AUTO_SLOP = 0.5  # seconds: the auto slop of cameras slower than 1 Hz

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
    """Pairs 'rgb' and 'thermal' messages whose stamps differ by at most the slop, best first.

    Each stream keeps a stamp-sorted queue of at most ``queue_size`` unpaired messages. Two
    queued messages form a pair when each is the other's nearest partner within the slop, and
    the pair is emitted as soon as no better partner can still arrive for either of them: the
    other stream has moved past it, judged with a lower bound on that stream's frame period
    (half its median stamp step; 0 until two stamps are known, so the very first pair waits
    for the next image), as message_filters' C++ ApproximateTime policy does with its
    inter-message lower bound. So a message does not take the first partner inside the slop
    when a closer one is still in flight, and with synchronised cameras pairs still come out
    as soon as both images are in. A pair overdue by ``max_lateness`` is
    emitted anyway. Messages older than an emitted pair can no longer be emitted in order and
    are dropped (misses). A queued message expires once the other stream's newest stamp is
    more than ``slop + max_lateness`` past it (a stopped stream's leftovers go, the live stream
    keeps its last ``queue_size``). A stamp more than ``reset_jump`` seconds older than its
    stream's newest (a bag loop, a restarted camera) flushes both queues.

    Args:
        slop: largest stamp difference of a pair, seconds (> 0); None: auto, half the frame
            period of the faster stream (measured from stamps; :data:`DEFAULT_SLOP` until then).
        queue_size: unpaired messages kept per stream (>= 1).
        max_lateness: how long (stamp seconds) a pair may wait for a better partner, and how
            far a message may trail its stream's newest and still find its partner (>= 0).
        reset_jump: backward stamp jump, seconds, that resets both queues (> slop + max_lateness).
    """

    def __init__(
        self,
        slop: float | None = DEFAULT_SLOP,
        queue_size: int = 10,
        max_lateness: float = 0.1,
        reset_jump: float = 1.0,
    ) -> None:
        if slop is not None and not slop > 0:
            raise ValueError(f'slop must be > 0 seconds (or None: auto), got {slop}')
        if queue_size < 1:
            raise ValueError(f'queue_size must be >= 1, got {queue_size}')
        if not max_lateness >= 0:
            raise ValueError(f'max_lateness must be >= 0 seconds, got {max_lateness}')
        if not reset_jump > (slop or MAX_AUTO_SLOP) + max_lateness:
            raise ValueError(
                f'reset_jump must exceed slop + max_lateness ({(slop or MAX_AUTO_SLOP)} + '
                f'{max_lateness}), got {reset_jump}'
            )
        self.fixed_slop = slop
        self.queue_size = queue_size
        self.max_lateness = max_lateness
        self.reset_jump = reset_jump
        self._lock = threading.Lock()
        self._seq = itertools.count()  # tie-breaker: queued items themselves are never compared
        self._queues: dict[str, list[tuple[float, int, Any]]] = {s: [] for s in STREAMS}
        self._steps: dict[str, deque[float]] = {s: deque(maxlen=9) for s in STREAMS}
        self._newest: dict[str, float] = {s: -math.inf for s in STREAMS}
        self._paired_until: dict[str, float] = {s: -math.inf for s in STREAMS}
        self._ready: deque[Pair] = deque()  # final pairs not yet returned
        self._added = self._pairs = self._misses = self._resets = 0

    @property
    def slop(self) -> float:
        """The slop in use, seconds (the fixed one, or the auto estimate now)."""
        with self._lock:
            return self._slop_locked()

    def add(self, stream: str, stamp: float, item: Any) -> Pair | None:
        """Queue ``item`` of ``stream`` ('rgb' or 'thermal') stamped ``stamp`` (seconds).

        Returns:
            The oldest pair made final and not yet returned, or None. One message can make two
            pairs final (it proves a waiting pair and completes its own): take the others with
            :meth:`pop_ready` (or they come with the next calls).
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
            if stamp > self._newest[stream]:
                # every forward step after the first stamp, also those longer than reset_jump:
                # cameras slower than 1 / reset_jump Hz have no shorter ones, and a pause is one
                # outlier in the median
                if self._newest[stream] > -math.inf:
                    self._steps[stream].append(stamp - self._newest[stream])
                self._newest[stream] = stamp
            if stamp <= self._paired_until[stream]:
                self._misses += 1  # older than a pair already emitted
            else:
                queue = self._queues[stream]
                bisect.insort(queue, (stamp, next(self._seq), item))
                if len(queue) > self.queue_size:
                    del queue[0]
                    self._misses += 1
                self._emit_locked()
                self._expire_locked()
            return self._ready.popleft() if self._ready else None

    def pop_ready(self) -> Pair | None:
        """The next pair made final by an earlier :meth:`add` and not returned yet, or None."""
        with self._lock:
            return self._ready.popleft() if self._ready else None

    def reset(self) -> None:
        """Drop every queued message (counted as misses) and forget all stamps."""
        with self._lock:
            self._flush_locked()

    def stats(self) -> SyncStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            queued = sum(len(q) for q in self._queues.values())
            return SyncStats(self._added, self._pairs, self._misses, self._resets, queued)

    def _period_locked(self, stream: str) -> float | None:
        steps = sorted(self._steps[stream])
        return steps[len(steps) // 2] if steps else None

    def _slop_locked(self) -> float:
        if self.fixed_slop is not None:
            return self.fixed_slop
        periods = [p for p in map(self._period_locked, STREAMS) if p]
        return min(0.5 * min(periods), MAX_AUTO_SLOP) if periods else DEFAULT_SLOP

    def _nearest_locked(self, stream: str, stamp: float, slop: float) -> int | None:
        """Index of ``stream``'s queued message nearest to ``stamp`` within ``slop``."""
        queue = self._queues[stream]
        index = bisect.bisect_left(queue, stamp, key=lambda entry: entry[0])
        near = [i for i in (index - 1, index) if 0 <= i < len(queue)]
        best = min(near, key=lambda i: abs(queue[i][0] - stamp), default=None)
        return best if best is not None and abs(queue[best][0] - stamp) <= slop else None

    def _final_locked(self, stream: str, stamp: float, gap: float, slop: float) -> bool:
        """True if no message of the OTHER stream closer than ``gap`` to ``stamp`` can come."""
        other = STREAMS[1 - STREAMS.index(stream)]
        period = self._period_locked(other)
        lower_bound = 0.5 * period if period else 0.0  # the other stream's next stamp step
        return self._newest[other] + lower_bound >= stamp + gap

    def _emit_locked(self) -> None:
        """Move every final (or overdue) mutual-nearest pair to the ready list, oldest first."""
        slop = self._slop_locked()
        while (pair := self._next_final_locked(slop)) is not None:
            self._ready.append(pair)

    def finish(self) -> list[Pair]:
        """End of input (a bag's end, or where a damaged bag stops): the pairs left, oldest first.

        No partner can arrive any more, so every mutual-nearest pair within the slop is final,
        ready pairs not yet returned included; unpaired messages stay queued (see :meth:`stats`).
        """
        with self._lock:
            slop = self._slop_locked()
            while (pair := self._next_final_locked(slop, end=True)) is not None:
                self._ready.append(pair)
            pairs = list(self._ready)
            self._ready.clear()
            return pairs

    def _next_final_locked(self, slop: float, end: bool = False) -> Pair | None:
        newest = max(self._newest.values())
        for rgb_index, (rgb_stamp, _, _) in enumerate(self._queues['rgb']):
            thermal_index = self._nearest_locked('thermal', rgb_stamp, slop)
            if thermal_index is None:
                continue
            thermal_stamp = self._queues['thermal'][thermal_index][0]
            if self._nearest_locked('rgb', thermal_stamp, slop) != rgb_index:
                continue  # the thermal message has a closer RGB partner
            gap = abs(rgb_stamp - thermal_stamp)
            overdue = newest > max(rgb_stamp, thermal_stamp) + slop + self.max_lateness
            if end or overdue or (self._final_locked('rgb', rgb_stamp, gap, slop)
                           and self._final_locked('thermal', thermal_stamp, gap, slop)):
                return self._pop_pair_locked(rgb_stamp, thermal_stamp)
        return None

    def _pop_pair_locked(self, rgb_stamp: float, thermal_stamp: float) -> Pair:
        """Remove the pair and every older message (misses); return the pair."""
        items = {}
        for stream, stamp in (('rgb', rgb_stamp), ('thermal', thermal_stamp)):
            queue = self._queues[stream]
            index = bisect.bisect_left(queue, stamp, key=lambda entry: entry[0])
            items[stream] = queue[index][2]
            self._misses += index  # older messages can no longer be emitted in order
            del queue[: index + 1]
            self._paired_until[stream] = stamp
        self._pairs += 1
        return Pair(items['rgb'], items['thermal'], rgb_stamp, thermal_stamp)

    def _expire_locked(self) -> None:
        slop = self._slop_locked()
        for index, stream in enumerate(STREAMS):
            horizon = self._newest[STREAMS[1 - index]] - slop - self.max_lateness
            queue = self._queues[stream]
            expired = bisect.bisect_left(queue, horizon, key=lambda entry: entry[0])
            self._misses += expired
            del queue[:expired]

    def _flush_locked(self) -> None:
        for stream in STREAMS:
            self._misses += len(self._queues[stream])
            self._queues[stream].clear()
            self._steps[stream].clear()
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
    until an item, ``close()`` or the timeout. ``close()`` drops a waiting item too (a stopping
    node finishes the job in hand and starts no new one), then
    ``get`` returns None at once, so a worker loop ends with
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
        """Wake the worker; the waiting item and later puts are dropped."""
        with self._cond:
            self._closed = True
            if self._item is not None:
                self._item, self._dropped = None, self._dropped + 1
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
