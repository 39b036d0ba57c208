"""ApproximateTimeSync, LatestSlot and StreamWatch: pure Python, no ROS."""

import threading
import time

import pytest

from univ_ros.stream_watch import StreamChange, StreamWatch
from univ_ros.sync import DEFAULT_SLOP, MAX_AUTO_SLOP, ApproximateTimeSync, LatestSlot

PERIOD = 1 / 30


def feed(sync, events):
    """events: (stream, stamp) in arrival order; items are 'rgb@0.033'-like labels."""
    pairs = []
    for stream, stamp in events:
        pair = sync.add(stream, stamp, f'{stream}@{stamp:.3f}')
        if pair is not None:
            pairs.append(pair)
    return pairs


def stamps(pairs):
    return [(round(p.rgb_stamp, 4), round(p.thermal_stamp, 4)) for p in pairs]


def assert_accounted(sync):
    s = sync.stats()
    assert s.added == 2 * s.pairs + s.misses + s.queued


def test_default_slop_is_half_a_30hz_frame():
    assert DEFAULT_SLOP == pytest.approx(PERIOD / 2)


def test_interleaved_streams_pair_exactly():
    sync = ApproximateTimeSync()
    events = []
    for k in range(20):
        events += [('rgb', k * PERIOD), ('thermal', k * PERIOD)]
    pairs = feed(sync, events)
    assert len(pairs) == 20
    assert all(p.skew == 0 and p.rgb == f'rgb@{p.rgb_stamp:.3f}' for p in pairs)
    assert all(p.thermal == f'thermal@{p.thermal_stamp:.3f}' for p in pairs)
    assert sync.stats().misses == 0
    assert_accounted(sync)


def test_jitter_within_slop_pairs_and_beyond_slop_does_not():
    sync = ApproximateTimeSync(slop=0.010)
    pairs = feed(sync, [('rgb', 1.000), ('thermal', 1.009), ('thermal', 1.050), ('rgb', 1.0615)])
    assert stamps(pairs) == [(1.0, 1.009)]
    assert pairs[0].skew == pytest.approx(0.009)
    assert sync.stats().pairs == 1 and sync.stats().queued == 2
    assert_accounted(sync)


def test_nearest_partner_wins():
    sync = ApproximateTimeSync(slop=0.02)
    pairs = feed(sync, [('thermal', 0.985), ('thermal', 1.004), ('rgb', 1.0), ('rgb', 1.03)])
    assert stamps(pairs) == [(1.0, 1.004)]
    assert sync.stats().misses == 1  # thermal 0.985 can no longer be emitted in order


def test_out_of_order_arrival_pairs_each_frame():
    sync = ApproximateTimeSync()
    t = [k * PERIOD for k in range(4)]
    events = [
        ('rgb', t[1]),
        ('rgb', t[0]),
        ('thermal', t[0]),
        ('thermal', t[1]),
        ('thermal', t[3]),
        ('thermal', t[2]),
        ('rgb', t[2]),
        ('rgb', t[3]),
    ]
    pairs = feed(sync, events)
    assert stamps(pairs) == [(round(x, 4), round(x, 4)) for x in t]
    assert sync.stats().misses == 0


def test_message_older_than_emitted_pair_is_a_miss():
    sync = ApproximateTimeSync()
    pairs = feed(sync, [('rgb', 1.0), ('thermal', 1.0), ('rgb', 0.9)])
    assert len(pairs) == 1
    assert sync.stats().misses == 1 and sync.stats().queued == 0


def test_burst_of_one_stream_is_bounded_then_pairs_with_newest():
    sync = ApproximateTimeSync(queue_size=5)
    pairs = feed(sync, [('thermal', 1 + k * 0.002) for k in range(50)])  # 50 within 0.1 s
    assert pairs == [] and sync.stats().queued == 5
    pairs = feed(sync, [('rgb', 1.098)])
    assert stamps(pairs) == [(1.098, 1.098)]
    assert sync.stats().misses == 49
    assert_accounted(sync)


def test_one_stream_stops_then_resumes():
    sync = ApproximateTimeSync(queue_size=8)
    frames = [k * PERIOD for k in range(200)]
    both = [(s, t) for t in frames[:30] for s in ('rgb', 'thermal')]
    assert len(feed(sync, both)) == 30
    # thermal stops for 100 frames: rgb alone, bounded, no pairs
    assert feed(sync, [('thermal', frames[30])] + [('rgb', t) for t in frames[31:130]]) == []
    stats = sync.stats()
    assert stats.queued == 8  # only rgb's last window; thermal's leftover expired
    # thermal comes back: pairing resumes at once
    resumed = [(s, t) for t in frames[130:140] for s in ('thermal', 'rgb')]
    assert len(feed(sync, resumed)) == 10
    assert sync.stats().resets == 0
    assert_accounted(sync)


def test_time_going_backwards_resets_and_pairing_resumes():
    sync = ApproximateTimeSync()
    loop = [(s, 100 + k * PERIOD) for k in range(10) for s in ('rgb', 'thermal')]
    assert len(feed(sync, loop)) == 10
    feed(sync, [('rgb', 100 + 10 * PERIOD)])  # queued, then flushed by the jump
    restarted = [(s, k * PERIOD) for k in range(10) for s in ('thermal', 'rgb')]
    pairs = feed(sync, restarted)
    assert len(pairs) == 10 and pairs[0].rgb_stamp == 0
    stats = sync.stats()
    assert stats.resets == 1 and stats.misses == 1
    assert_accounted(sync)


def test_small_backwards_step_does_not_reset():
    sync = ApproximateTimeSync(reset_jump=1.0)
    feed(sync, [('rgb', 10.0), ('rgb', 9.5)])
    assert sync.stats().resets == 0


def test_add_rejects_unknown_stream_and_bad_stamp():
    sync = ApproximateTimeSync()
    with pytest.raises(ValueError, match='depth'):
        sync.add('depth', 0.0, object())
    with pytest.raises(ValueError, match='finite'):
        sync.add('rgb', float('nan'), object())
    with pytest.raises(ValueError, match='reset_jump'):
        ApproximateTimeSync(slop=0.5, max_lateness=0.6, reset_jump=1.0)


def test_items_are_never_compared():
    class Uncomparable:
        def __eq__(self, other):
            raise AssertionError('compared')

        __lt__ = __gt__ = __eq__

    sync = ApproximateTimeSync()
    for _ in range(3):
        sync.add('rgb', 1.0, Uncomparable())
    assert sync.add('thermal', 1.0, Uncomparable()) is not None


def test_slot_drops_plus_processed_equals_produced_under_fast_producer():
    slot: LatestSlot[int] = LatestSlot()
    produced = 300
    processed = []

    def worker():
        while True:
            item = slot.get(timeout=1.0)
            if item is None and slot.closed:
                return
            if item is not None:
                processed.append(item)
                time.sleep(0.002)  # slower than the producer

    thread = threading.Thread(target=worker)
    thread.start()
    for k in range(1, produced + 1):
        slot.put(k)
        time.sleep(0.0001)
    slot.close()
    thread.join(timeout=5)
    assert not thread.is_alive()
    stats = slot.stats()
    assert stats.dropped > 0 and len(processed) > 1
    assert stats.dropped + len(processed) == produced == stats.put
    assert stats.taken == len(processed) and stats.waiting == 0
    assert processed == sorted(processed)  # newest always wins (the last may be closed away)


def test_slot_get_times_out_and_close_wakes_a_waiting_worker():
    slot: LatestSlot[str] = LatestSlot()
    start = time.monotonic()
    assert slot.get(timeout=0.05) is None
    assert time.monotonic() - start >= 0.04
    threading.Timer(0.05, slot.close).start()
    start = time.monotonic()
    assert slot.get(timeout=5.0) is None
    assert time.monotonic() - start < 2.0
    slot.put('late')
    assert slot.stats().dropped == 1 and slot.get(timeout=0) is None


def test_close_drops_the_waiting_item_so_a_stopping_worker_runs_no_new_job():
    slot: LatestSlot[str] = LatestSlot()
    slot.put('waiting')
    slot.close()
    assert slot.get(timeout=0) is None and slot.closed
    stats = slot.stats()
    assert (stats.put, stats.dropped, stats.taken, stats.waiting) == (1, 1, 0, 0)
    with pytest.raises(ValueError, match='None'):
        slot.put(None)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_stream_watch_stale_detection_reason_and_recovery():
    clock = FakeClock()
    watch = StreamWatch(stale_after=0.5, clock=clock)
    assert watch.live_streams() == ('rgb', 'thermal') and watch.poll() == []  # grace period
    for _ in range(30):  # both at 30 Hz for 1 s
        clock.now += PERIOD
        watch.tick('rgb')
        watch.tick('thermal')
    assert watch.rate('rgb') == pytest.approx(30, rel=1e-6)
    for _ in range(30):  # thermal stops
        clock.now += PERIOD
        watch.tick('rgb')
    assert watch.stale_streams() == ('thermal',) and watch.live_streams() == ('rgb',)
    assert watch.rate('thermal') == 0.0
    assert watch.reason('thermal') == 'silent for 1.0 s'
    changes = watch.poll()
    assert changes == [StreamChange('thermal', True, 'silent for 1.0 s')]
    assert watch.poll() == []  # reported once
    clock.now += PERIOD
    watch.tick('thermal')  # back
    assert watch.live_streams() == ('rgb', 'thermal')
    assert watch.poll() == [StreamChange('thermal', False, '')]


def test_a_camera_sending_only_bad_frames_is_unusable_and_says_why():
    clock = FakeClock()
    watch = StreamWatch(stale_after=0.5, clock=clock)
    for k in range(60):  # thermal: 1 s good, then 1 s of frames of the wrong size
        clock.now += PERIOD
        watch.tick('rgb')
        if k < 30:
            watch.tick('thermal')
        else:
            watch.bad('thermal', 'size 320x240 vs 640x480')
        if k == 30 + 14:  # 0.47 s of bad frames: not yet
            assert watch.live_streams() == ('rgb', 'thermal')
    assert watch.stale_streams() == ('thermal',)
    assert watch.reason('thermal') == 'bad frames: size 320x240 vs 640x480'
    assert watch.rate('thermal') == pytest.approx(30, rel=1e-6)  # it does send, at 30 Hz
    assert watch.poll() == [StreamChange('thermal', True, 'bad frames: size 320x240 vs 640x480')]
    clock.now += 0.6  # the bad frames stop too: now silent
    assert watch.reason('thermal') == 'silent for 0.6 s'


def test_rate_is_not_inflated_by_bursts_of_late_callbacks():
    clock = FakeClock()
    watch = StreamWatch(stale_after=0.5, clock=clock)
    for _ in range(30):  # a 30 Hz camera whose callbacks run in bursts of 10 every 1/3 s
        clock.now += 10 * PERIOD
        for _ in range(10):
            clock.now += 1e-4
            watch.tick('rgb')
    assert watch.rate('rgb') == pytest.approx(30, rel=0.05)


def test_rate_from_stamps_is_the_cameras_through_a_callback_stall():
    """A 30 Hz camera whose callbacks stall for 0.4 s and then catch up: the stamps still say
    30 Hz (counting arrivals in the window said 24 during the stall: the node-test flake)."""
    clock = FakeClock()
    watch = StreamWatch(stale_after=0.5, clock=clock)
    stamp = 1000.0
    for k in range(90):  # 3 s at 30 Hz; frames 60..71 are delivered 0.4 s late, together
        stamp += PERIOD
        clock.now += PERIOD
        if 60 <= k < 72:
            if k == 71:  # the burst
                clock.now += 1e-4
                for j in range(12):
                    watch.tick('rgb', stamp - (11 - j) * PERIOD)
            continue
        watch.tick('rgb', stamp)
        if k == 59:
            clock.now += 0.39  # the stall: nothing arrives, then the first late frame
            assert watch.rate('rgb') == pytest.approx(30, rel=1e-6)
    assert watch.rate('rgb') == pytest.approx(30, rel=1e-6)


def test_rate_starts_over_when_stamps_go_back():
    clock = FakeClock()
    watch = StreamWatch(stale_after=0.5, clock=clock)
    for k in range(30):  # a bag at 10 Hz stamps, then it loops to its first stamp
        clock.now += 0.1
        watch.tick('rgb', 50.0 + 0.1 * (k % 15))
    assert watch.rate('rgb') == pytest.approx(10, rel=1e-6)
    for _ in range(5):  # unset header stamps (0): arrivals counted instead
        clock.now += 0.1
        watch.tick('thermal', 0.0)
    assert watch.rate('thermal') == pytest.approx(10, rel=1e-6)


def test_stream_watch_never_started_streams_go_stale_and_restart_gives_grace():
    clock = FakeClock()
    watch = StreamWatch(stale_after=1.0, clock=clock)
    clock.now += 1.5
    assert watch.live_streams() == ()
    assert {c.stream for c in watch.poll()} == {'rgb', 'thermal'}
    watch.restart()
    assert watch.live_streams() == ('rgb', 'thermal')
    with pytest.raises(ValueError, match='depth'):
        watch.tick('depth')


def test_restart_gives_grace_to_a_common_pause_not_to_a_camera_dead_before():
    clock = FakeClock()
    watch = StreamWatch(stale_after=0.5, clock=clock)
    for _ in range(5):  # both cameras, then thermal unplugged while RGB goes on for 1 s
        watch.tick('rgb'), watch.tick('thermal')
        clock.now += 0.1
    for _ in range(10):
        watch.tick('rgb')
        clock.now += 0.1
    assert [(c.stream, c.stale) for c in watch.poll()] == [('thermal', True)]
    clock.now += 1.0  # an RGB hiccup: no camera left
    assert [(c.stream, c.stale) for c in watch.poll()] == [('rgb', True)]
    watch.restart()  # what the pipeline does on the first image after that
    watch.tick('rgb')
    assert watch.live_streams() == ('rgb',)  # thermal is not awaited, nor reported back
    assert [(c.stream, c.stale) for c in watch.poll()] == [('rgb', False)]
    watch.tick('thermal')  # it is back when it sends an image
    assert [(c.stream, c.stale) for c in watch.poll()] == [('thermal', False)]
    clock.now += 2.0  # both pause together: both get the grace, the partner is awaited
    assert watch.live_streams() == ()
    watch.restart()
    watch.tick('rgb')
    assert watch.live_streams() == ('rgb', 'thermal')


def camera(rate: float, seconds: float, phase: float = 0.0) -> list[float]:
    return [phase + k / rate for k in range(int(seconds * rate))]


def arrivals(rgb: list[float], thermal: list[float], thermal_delay: float = 0.0) -> list:
    """(stream, stamp) in arrival order: thermal delivered ``thermal_delay`` s late."""
    events = [(t, 'rgb', t) for t in rgb] + [(t + thermal_delay, 'thermal', t) for t in thermal]
    return [(stream, stamp) for _, stream, stamp in sorted(events)]


def nearest(stamp: float, others: list[float]) -> float:
    return min(others, key=lambda t: abs(t - stamp))


def test_a_closer_partner_still_in_flight_is_waited_for():
    # RGB 30 Hz delivered 25 ms after a 9 Hz thermal camera, slop 50 ms: when RGB 0.000
    # arrives, thermal 0.020 is queued and within the slop, but RGB 0.0333 (13 ms from it) is
    # still in flight. Taking the first partner in the slop (greedy) pairs 0.000 with it.
    rgb = camera(30, 1.1, phase=0.0)
    thermal = [t + 0.02 for t in camera(9, 1.1)]
    sync = ApproximateTimeSync(slop=0.05)
    pairs = feed(sync, arrivals(rgb, thermal, thermal_delay=-0.025))
    assert len(pairs) == len(thermal)
    for pair in pairs:  # every thermal frame with its nearest RGB frame, not the first in slop
        assert pair.rgb_stamp == nearest(pair.thermal_stamp, rgb)
    assert_accounted(sync)


def test_synchronised_cameras_pair_as_soon_as_both_arrive():
    sync = ApproximateTimeSync(slop=None)
    sync.add('rgb', 0.0, 0)
    assert sync.add('thermal', 0.003, 0) is None  # no period known: a closer RGB may come
    first = sync.add('rgb', PERIOD, 1)  # ... it did not
    assert (first.rgb, first.thermal) == (0, 0)
    for k in range(1, 60):
        if k > 1:
            assert sync.add('rgb', k * PERIOD, k) is None
        pair = sync.add('thermal', k * PERIOD + 0.003, k)  # 3 ms skew, as the bags
        assert pair is not None and (pair.rgb, pair.thermal) == (k, k)
    assert sync.slop == pytest.approx(PERIOD / 2)


@pytest.mark.parametrize('rgb_rate, thermal_rate', [(15, 8.7), (10, 10), (30, 9)])
def test_auto_slop_pairs_every_frame_of_slower_unsynchronised_cameras(rgb_rate, thermal_rate):
    rgb = camera(rgb_rate, 10.0)
    thermal = camera(thermal_rate, 10.0, phase=0.4 / rgb_rate)  # not triggered together
    fixed = feed(ApproximateTimeSync(), arrivals(rgb, thermal, 0.01))  # half a 30 Hz frame
    sync = ApproximateTimeSync(slop=None)
    auto = feed(sync, arrivals(rgb, thermal, 0.01))
    slower = min(len(rgb), len(thermal))
    assert len(auto) >= slower - 2  # the first pairs wait for the period estimates
    if max(rgb_rate, thermal_rate) < 30:  # half a 30 Hz frame misses many of their pairs
        assert len(fixed) < 0.8 * len(auto)
    for pair in auto:
        assert pair.rgb_stamp == nearest(pair.thermal_stamp, rgb)
    assert_accounted(sync)


def test_auto_slop_of_cameras_slower_than_reset_jump_and_through_a_pause():
    # 0.5 Hz cameras: every stamp step is longer than reset_jump (1 s) and is their period
    rgb, thermal = camera(0.5, 40.0), camera(0.5, 40.0, phase=0.05)
    sync = ApproximateTimeSync(slop=None)
    pairs = feed(sync, arrivals(rgb, thermal))
    assert sync.slop == MAX_AUTO_SLOP and len(pairs) >= len(thermal) - 2
    assert_accounted(sync)
    # 30 Hz cameras pausing 5 s: the pause is one step of the nine in the median
    frames = camera(30, 1.0) + [t + 6.0 for t in camera(30, 0.2)]
    sync = ApproximateTimeSync(slop=None)
    feed(sync, arrivals(frames, [t + 0.003 for t in frames]))
    assert sync.slop == pytest.approx(PERIOD / 2)


def test_concurrent_adds_keep_the_counters_consistent():
    sync = ApproximateTimeSync(queue_size=4)
    pairs = []

    def produce(stream):
        for k in range(2000):
            pair = sync.add(stream, k * PERIOD, k)
            if pair is not None:
                pairs.append(pair)

    threads = [threading.Thread(target=produce, args=(s,)) for s in ('rgb', 'thermal')]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = sync.stats()
    assert stats.added == 4000 and stats.pairs == len(pairs) > 0
    assert_accounted(sync)
    assert all(p.rgb == p.thermal for p in pairs)  # only same-frame partners within slop


def test_finish_emits_the_pairs_still_waiting_at_the_end_of_a_bag():
    """A first pair waits for the next image; at the end of the input nothing else can come."""
    sync = ApproximateTimeSync()
    assert feed(sync, [('rgb', 0.0), ('thermal', 0.003)]) == []  # frame period still unknown
    assert stamps(sync.finish()) == [(0.0, 0.003)]
    sync = ApproximateTimeSync()
    events = [('rgb', 0.0), ('thermal', 0.003), ('rgb', PERIOD), ('thermal', PERIOD + 0.005),
              ('rgb', 2 * PERIOD), ('thermal', 2 * PERIOD + 0.03)]  # beyond the slop: no pair
    early = feed(sync, events)
    late = sync.finish()
    assert stamps(early + late) == [(0.0, 0.003), (round(PERIOD, 4), round(PERIOD + 0.005, 4))]
    assert sync.finish() == [] and sync.stats().queued == 2  # the last two stay unpaired
    assert_accounted(sync)


def test_rate_from_stamps_is_the_cameras_through_lost_frames_and_follows_a_real_change():
    """Six frames lost in one burst inside the window: still 30 Hz (counting stamps said 27: the
    node-test flake under load); a camera that really halves its rate reads 15 Hz."""
    clock = FakeClock()
    watch = StreamWatch(stale_after=0.5, clock=clock)
    stamp = 1000.0
    for k in range(90):  # 3 s at 30 Hz; frames 70..75 never arrive
        stamp += PERIOD
        clock.now += PERIOD
        if not 70 <= k < 76:
            watch.tick('rgb', stamp)
    assert watch.rate('rgb') == pytest.approx(30, rel=1e-6)
    for _ in range(45):  # 3 s at 15 Hz
        stamp += 2 * PERIOD
        clock.now += 2 * PERIOD
        watch.tick('rgb', stamp)
    assert watch.rate('rgb') == pytest.approx(15, rel=1e-6)
