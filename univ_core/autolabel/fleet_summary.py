"""The fleet autolabel summary: ``summary.json`` (numbers) and ``summary.md`` (for people).

Totals are sums over the inputs that were labelled (an input that failed counts nothing); each
input's own ``provenance.json`` keeps the rest (mask pixel shares, teacher AP50 against real
labels).
"""

from collections.abc import Sequence
from pathlib import Path

from univ_core.autolabel.output import MODALITY_DIRS
from univ_core.fleet.report import (
    error_lines,
    errors,
    execution,
    fmt,
    unit_counts,
    worker_lines,
)
from univ_core.train.checkpoint import atomic_write, json_safe, write_json

COUNTS = ('pairs', 'night_pairs', 'real_label_pairs')  # per input, from its provenance


def fleet_summary(rows: Sequence[dict], summary: dict, header: dict) -> dict:
    """Totals over the labelled inputs, one row per input, the errors, how the run went.

    Args:
        rows: one per input in input order (``status`` ok | error; the worker's counts).
        summary: the fleet runner's summary (status, counts, engine, workers, wall time).
        header: 'teachers' (sha256), 'layout', 'split', 'classes' (detection classes).
    """
    done = [r for r in rows if r['status'] != 'error']
    classes = header['classes']
    totals = {k: sum(r[k] for r in done) for k in COUNTS}
    totals['boxes'] = {m: {c: sum(r['boxes'][m][c] for r in done) for c in classes}
                       for m in MODALITY_DIRS}
    now = sum(r['pairs'] for r in done if not r.get('reused'))
    return {
        'kind': 'fleet-autolabel', **header, 'status': summary['status'],
        'partial': summary['status'] != 'complete', 'inputs': unit_counts(summary),
        'totals': totals,
        'pairs_per_s': now / summary['wall_s'] if now and summary['wall_s'] > 0 else None,
        'wall_s': summary['wall_s'], 'execution': execution(summary),
        'workers': summary['worker_stats'], 'rows': list(rows), 'errors': errors(rows),
    }


def _box_lines(totals: dict) -> list[str]:
    """Markdown: labelled boxes per class and modality."""
    classes = list(next(iter(totals['boxes'].values())))
    lines = ['## Boxes', '', '| modality | ' + ' | '.join(classes) + ' | total |',
             '|---|' + '---|' * (len(classes) + 1)]
    return lines + [f'| {m} | ' + ' | '.join(str(n[c]) for c in classes) +
                    f' | {sum(n.values())} |' for m, n in totals['boxes'].items()]


def _input_lines(rows: Sequence[dict]) -> list[str]:
    """Markdown: one row per input."""
    lines = ['', '## Inputs', '', '| input | status | output | pairs | night | real labels | '
             'RGB boxes | thermal boxes | wall s | worker |', '|' + '---|' * 10]
    for row in rows:
        done = row['status'] != 'error'
        status = row['status'] + (' (earlier run)' if row.get('reused') else '')
        cells = [*(row[k] for k in COUNTS), *(sum(row['boxes'][m].values())
                                              for m in MODALITY_DIRS)] if done else ['–'] * 5
        lines.append(f"| `{row['input']}` | {status} | "
                     f"{'`' + row['output'] + '/`' if done else '–'} | "
                     + ' | '.join(map(str, cells)) +
                     f" | {fmt(row['wall_s'], digits=1)} | {row.get('worker') or '–'} |")
    return lines


def markdown(report: dict) -> str:
    """The fleet ``summary.md``."""
    lines = ['# UNIV fleet autolabel summary', '']
    inputs, totals, run = report['inputs'], report['totals'], report['execution']
    if report['partial']:
        lines += [f"**{report['status'].upper()}**: {inputs['error']} of {inputs['total']} "
                  f"inputs failed, {inputs['partial']} damaged; see Errors", '']
    lines += [f"- inputs: {inputs['total']} ({inputs['ok']} ok, {inputs['partial']} damaged: "
              f"labelled up to the damage, {inputs['error']} failed); "
              f"{inputs['ran']} run now, {inputs['reused']} from an earlier run",
              f"- pairs: {totals['pairs']} ({totals['night_pairs']} night: no masks; "
              f"{totals['real_label_pairs']} with real boxes, which replace the teachers')",
              f"- teachers (sha256): {', '.join(t[:12] for t in report['teachers'])}; layout "
              f"{report['layout']}, split {report['split'] or 'all'}",
              f"- throughput: {fmt(report['pairs_per_s'], digits=2)} pairs/s: pairs run now / "
              f"{fmt(report['wall_s'], digits=1)} s wall, worker start-up included "
              f"({run['engine']}, {run['workers']} workers)", '']
    lines += [*_box_lines(totals), *_input_lines(report['rows']),
              *error_lines(report['errors']), *worker_lines(report['workers'], 'inputs', 'pairs')]
    lines += ['', '## Files', '', '- per input: `<output>/` (labels/, masks/, pairs.json, '
              'provenance.json, summary.png, overlays/), as `univ autolabel INPUT` writes it',
              '- `results/`: the per-input results this summary is merged from', '']
    return '\n'.join(lines)


def write_summary(folder: Path, name: str, report: dict) -> dict:
    """Write ``<name>.json`` and ``<name>.md`` into ``folder``; return the report as written."""
    report = json_safe(report)
    write_json(folder / f'{name}.json', report)
    text = markdown(report)
    atomic_write(folder / f'{name}.md', lambda tmp: tmp.write_text(text))
    return report
