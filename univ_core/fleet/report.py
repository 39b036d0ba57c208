"""What every fleet report shares: how the run went, the error list, the workers table.

A job's ``merge`` (bag replay, autolabelling) adds its own numbers around these, so every fleet
report names its engine, errors and per-worker throughput the same way.
"""

from collections.abc import Sequence
from typing import Any

# The runner's summary keys that are counts, not how the units ran (see execution()).
COUNT_KEYS = ('status', 'counts', 'inputs', 'ran', 'reused', 'wall_s', 'worker_stats')


def fmt(value: Any, scale: float = 1.0, digits: int = 3) -> str:
    """A number for a Markdown table ('–' when there is none)."""
    return '–' if value is None else f'{value * scale:.{digits}f}'


def first_line(text: str | None) -> str:
    """The first line of an error (Ray's are long; the JSON report keeps all of it)."""
    lines = (text or '').strip().splitlines() or ['']
    return lines[0] + (' [...]' if len(lines) > 1 else '')


def execution(summary: dict) -> dict:
    """How the units ran (engine, workers, Ray sizes): the runner's summary less its counts."""
    return {k: v for k, v in summary.items() if k not in COUNT_KEYS}


def unit_counts(summary: dict) -> dict:
    """Inputs ok / partial / error, in all, run now and reused from an earlier run."""
    return summary['counts'] | {'total': summary['inputs'], 'ran': summary['ran'],
                                'reused': summary['reused']}


def errors(rows: Sequence[dict]) -> list[dict]:
    """``{'input', 'status', 'error'}`` of every row that is not ok, in row order."""
    return [{'input': r['input'], 'status': r['status'], 'error': r['error']}
            for r in rows if r['status'] != 'ok']


def error_lines(found: Sequence[dict]) -> list[str]:
    """Markdown: an Errors section listing :func:`errors` (nothing when there are none)."""
    if not found:
        return []
    return ['', '## Errors', '', *[f"- `{e['input']}` ({e['status']}): {first_line(e['error'])}"
                                   for e in found]]


def worker_lines(workers: dict, units: str, items: str) -> list[str]:
    """Markdown: per-worker units, items and throughput of this run (runner's worker_stats).

    Args:
        workers: host:pid -> {'units', 'items', 'busy_s', 'items_per_s'}.
        units: what a unit is, plural ('bags', 'inputs').
        items: what an item is, plural ('pairs').
    """
    lines = ['', '## Workers (this run)', '',
             f'| worker | {units} | {items} | busy s | {items}/s |', '|---|---|---|---|---|']
    return lines + [f"| {name} | {w['units']} | {w['items']} | {fmt(w['busy_s'], digits=1)} | "
                    f"{fmt(w['items_per_s'], digits=2)} |" for name, w in workers.items()]
