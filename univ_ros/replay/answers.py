"""Online replay: waiting until the node has answered every pair, and why pairs had no output.

The node answers a pair by publishing outputs or by dropping it, and its ``/diagnostics``
counters say which (``pairs_processed``, ``pairs_failed``, ``pairs_dropped``, ``pairs_waiting``,
``pairs_in_progress``, ``<camera>_frames``, ``bad_inputs``). The replay reads them before the
timed run (the warm-up is excluded) and after it, and waits until the node has counted every
image published, holds no pair, and every output it published has arrived; or until a timeout
derived from the node's measured processing time.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

from univ_ros.replay.bagio import deserialize

COUNTERS = ('rgb_frames', 'thermal_frames', 'pairs_in', 'pairs_processed', 'pairs_failed',
            'pairs_dropped', 'pairs_waiting', 'pairs_in_progress', 'bad_inputs', 'sync_misses')
DIAGNOSTIC_ARRAY = 'diagnostic_msgs/msg/DiagnosticArray'


def node_values(raw: bytes) -> dict[str, str]:
    """Key -> value of the node's pipeline status in one DiagnosticArray ({} when absent)."""
    for status in deserialize(raw, DIAGNOSTIC_ARRAY).status:
        if status.name.endswith('univ_perception: pipeline'):
            return {kv.key: kv.value for kv in status.values}
    return {}


def counters(values: dict[str, str]) -> dict[str, int]:
    """The pipeline counters of a status (missing ones as 0)."""
    return {k: int(values[k]) if values.get(k, '').isdigit() else 0 for k in COUNTERS}


@dataclass
class Answers:
    """What the wait ended with."""

    final: dict[str, int]  # the node's counters at the end (absolute)
    values: dict[str, str]  # the node's last status values
    unanswered: int  # pairs still waiting or in progress when the wait timed out
    timeout_s: float  # the wait allowed after the last publication
    timed_out: bool


def answer_timeout(processing_ms: float | None, diagnostics_period: float = 1.0) -> float:
    """Seconds to wait after the last publication: a slow node gets proportionally longer.

    The last pairs are one in progress and one waiting (the node's one-slot buffer): twice the
    processing time, times 3 for a loaded machine, plus two diagnostics periods and 5 s.
    """
    processing_s = (processing_ms or 0.0) / 1e3
    return 5.0 + 3 * 2 * processing_s + 2 * diagnostics_period


def wait_for_answers(statuses: Callable[[float], list[tuple[float, dict]]],
                     outputs: Callable[[], int], published: dict[str, int],
                     baseline: dict[str, int], since: float,
                     timeout: Callable[[dict], float]) -> Answers:
    """Wait until the node answered every pair published after ``since``.

    Args:
        statuses: (arrival, node status values) received after a monotonic time.
        outputs: outputs (detections) received so far in the timed run.
        published: camera -> images published in the timed run.
        baseline: the node's counters before the timed run.
        since: monotonic time of the last publication.
        timeout: node status values -> seconds allowed after ``since``.
    """
    last: dict = {}
    while True:
        fresh = statuses(since)
        if fresh:
            last = fresh[-1][1]
        now = counters(last)
        delta = {k: now[k] - baseline.get(k, 0) for k in COUNTERS}
        counted = all(delta[f'{s}_frames'] >= n for s, n in published.items())
        idle = now['pairs_waiting'] == 0 and now['pairs_in_progress'] == 0
        if fresh and counted and idle and outputs() >= delta['pairs_processed']:
            return Answers(now, last, 0, timeout(last), False)
        allowed = timeout(last)
        if time.monotonic() - since > allowed:
            pending = now['pairs_waiting'] + now['pairs_in_progress']
            return Answers(now, last, pending, allowed, True)
        time.sleep(0.05)


def drop_reasons(synchronised: int, processed: int, baseline: dict[str, int],
                 answers: Answers) -> dict[str, int]:
    """Why each synchronised pair without an output got none (they sum to the drops).

    - ``replaced_while_busy``: the node dropped it for a newer pair while inferring;
    - ``inference_failed``: inference or publishing raised;
    - ``not_paired_by_node``: it never reached the node's worker (an image lost in transport
      or bad, or paired differently), = synchronised - pairs the node took in;
    - ``no_answer``: still waiting or in progress when the wait timed out;
    - ``output_not_received``: processed by the node, output never arrived here.
    """
    delta = {k: answers.final[k] - baseline.get(k, 0) for k in COUNTERS}
    reasons = {
        'replaced_while_busy': delta['pairs_dropped'],
        'inference_failed': delta['pairs_failed'],
        'not_paired_by_node': max(0, synchronised - delta['pairs_in']),
        'no_answer': answers.unanswered,
        'output_not_received': max(0, delta['pairs_processed'] - processed),
    }
    return reasons
