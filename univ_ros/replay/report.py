"""The replay report: ``report.json`` (numbers), ``report.md`` (for people) and PNG plots.

JSON has no NaN: a score that does not exist (a class with no ground truth) is ``null``.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from univ_core.fleet.report import (
    error_lines,
    errors,
    execution,
    fmt,
    unit_counts,
    worker_lines,
)
from univ_core.train.checkpoint import atomic_write, json_safe, write_json

PERCENTILES = (50, 95, 99)


def latency_stats(seconds: Sequence[float]) -> dict:
    """{'count', 'mean', 'p50', 'p95', 'p99', 'max'} in milliseconds (None when empty)."""
    if not len(seconds):
        return {'count': 0, 'mean': None, **{f'p{p}': None for p in PERCENTILES}, 'max': None}
    ms = 1e3 * np.asarray(seconds, np.float64)
    stats = {'count': int(ms.size), 'mean': float(ms.mean())}
    stats.update({f'p{p}': float(np.percentile(ms, p)) for p in PERCENTILES})
    stats['max'] = float(ms.max())
    return stats


def _score_lines(scores: dict) -> list[str]:
    """Markdown tables of the detection and segmentation scores."""
    lines = []
    detection = scores.get('detection') or {}
    if detection:
        lines += ['## Detection (COCO mAP)', '', '| mode | images | mAP | mAP50 | mAP75 |',
                  '|---|---|---|---|---|']
        lines += [f"| {m} | {d['images']} | {fmt(d['map'])} | {fmt(d['map50'])} | "
                  f"{fmt(d['map75'])} |" for m, d in detection.items()]
        names = list(next(iter(detection.values()))['ap50'])
        lines += ['', '| AP50 per class | ' + ' | '.join(names) + ' |',
                  '|---|' + '---|' * len(names)]
        lines += [f'| {m} | ' + ' | '.join(fmt(d['ap50'][n]) for n in names) + ' |'
                  for m, d in detection.items()]
        lines.append('')
    segmentation = scores.get('segmentation') or {}
    if segmentation:
        lines += ['## Segmentation', '', '| mode | mIoU | pixel accuracy |', '|---|---|---|']
        lines += [f"| {m} | {fmt(s['miou'])} | {fmt(s['pixel_accuracy'])} |"
                  for m, s in segmentation.items()]
        lines.append('')
    if not detection and not segmentation and scores.get('truth_without_pair'):
        lines += ['Ground truth is in the bag, but no processed pair had any: no accuracy '
                  'scores.', '']
    elif not detection and not segmentation:
        lines += ['No ground truth topics in the bag: no accuracy scores.', '']
    return lines


def markdown(report: dict) -> str:
    """``report.md``: a summary people read."""
    title = f"# UNIV replay report ({report['kind']})"
    lines = [title, '']
    if report.get('partial'):
        lines += [f"**PARTIAL**: {report['error']}", '']
    pairs, lat = report['pairs'], report['latency_ms']
    lines += [f"- bag: `{report['bag']}`", f"- model: `{report['model'] or '(default model)'}`",
              f"- mode: {report['mode']}",
              *([f"- precision: {report['precision']} (`precision: fp32` scores alike on every "
                 "machine; `auto` picks bf16 / int8 where the CPU has them)"]
                if report.get('precision') else []),
              f"- pairs: {pairs['synchronised']} synchronised, {pairs['processed']} processed, "
              f"{pairs['dropped']} dropped (drop rate {fmt(report['drop_rate'])}), "
              f"{pairs['sync_misses']} sync misses, {pairs['bad_inputs']} bad inputs",
              *[f'  - dropped, {why}: {n}'
                for why, n in (pairs.get('dropped_by_reason') or {}).items()],
              *[f'- **warning**: {text}' for text in report.get('warnings', [])],
              f"- latency ({report['latency_definition']}): p50 {fmt(lat['p50'], digits=1)} ms,"
              f" p95 {fmt(lat['p95'], digits=1)} ms, p99 {fmt(lat['p99'], digits=1)} ms",
              f"- throughput: {fmt(report['throughput_hz'], digits=2)} pairs/s"]
    if report.get('thresholds'):
        cut = report['thresholds']
        lines.append(f"- detection scores: mAP from every box >= {cut['map_from']} (COCO "
                     f"protocol); the output bag holds boxes >= {cut['deployment']} (deployment)")
    lines.append('')
    lines += _score_lines(report.get('scores') or {})
    outputs = report.get('outputs') or {}
    lines += ['## Files', '', f"- output bag: `{outputs.get('bag')}`"]
    lines += [f'- `{path}`' for path in outputs.get('plots', []) + outputs.get('overlays', [])]
    return '\n'.join(lines) + '\n'


def _plot_latency(path: Path, seconds: Sequence[float], definition: str) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(1e3 * np.asarray(seconds), bins=30, color='#3a7dc9')
    ax.set_xlabel(f'latency, ms ({definition})')
    ax.set_ylabel('pairs')
    atomic_write(path, lambda tmp: fig.savefig(tmp, format='png', dpi=100, bbox_inches='tight'))
    plt.close(fig)


def _plot_classes(path: Path, scores: dict) -> bool:
    """Per-class bars: AP50 per detection class and IoU per segmentation class, per mode."""
    panels = [(f'AP50 ({kind})', {m: d['ap50'] for m, d in scores.get(kind, {}).items()})
              for kind in ('detection',)]
    panels += [('IoU (segmentation)', {m: s['iou'] for m, s in
                                       scores.get('segmentation', {}).items()})]
    panels = [(title, per_mode) for title, per_mode in panels if per_mode]
    if not panels:
        return False
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 3.2 * len(panels)), squeeze=False)
    for ax, (title, per_mode) in zip(axes[:, 0], panels, strict=True):
        names = list(next(iter(per_mode.values())))
        width = 0.8 / len(per_mode)
        for i, (mode, values) in enumerate(per_mode.items()):
            heights = [0.0 if values[n] is None or values[n] != values[n] else values[n]
                       for n in names]
            ax.bar(np.arange(len(names)) + i * width, heights, width, label=mode)
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30)
        ax.set_ylim(0, 1)
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format='png', dpi=100))
    plt.close(fig)
    return True


def write_plots(folder: Path, report: dict, latencies_s: Sequence[float]) -> list[str]:
    """Write ``latency.png`` and ``per_class.png`` (when there is data); return their names."""
    plots = []
    if len(latencies_s):
        _plot_latency(folder / 'latency.png', latencies_s, report['latency_definition'])
        plots.append('latency.png')
    if _plot_classes(folder / 'per_class.png', report.get('scores') or {}):
        plots.append('per_class.png')
    return plots


def write_report(folder: Path, report: dict, latencies_s: Sequence[float],
                 overlays: Sequence[Path]) -> dict:
    """Write ``report.json``, ``report.md``, ``latency.png`` and ``per_class.png`` into ``folder``.

    Args:
        folder: the replay's output folder.
        report: the numbers (see :func:`univ_ros.replay.offline.offline_report`).
        latencies_s: per-pair latencies, seconds, for the histogram.
        overlays: overlay PNGs already written (listed relative to ``folder``).

    Returns:
        The JSON-safe report as written.
    """
    plots = write_plots(folder, report, latencies_s)
    report = json_safe({**report, 'outputs': {
        'bag': 'bag', 'plots': plots,
        'overlays': [str(Path(p).relative_to(folder)) for p in overlays]}})
    write_json(folder / 'report.json', report)
    text = markdown(report)
    atomic_write(folder / 'report.md', lambda tmp: tmp.write_text(text))
    return report


def fleet_numbers(rows: Sequence[dict], scores: dict, latencies_s: Sequence[float],
                  summary: dict, header: dict) -> dict:
    """The fleet report's numbers: sums over the bags read, latency and scores over all pairs.

    Args:
        rows: one per bag in input order (``status`` ok | partial | error; ``pairs``,
            ``images`` for the bags read).
        scores: scores of all pairs together (:meth:`Scorer.results` of the merged Scorer).
        latencies_s: every pair's latency, seconds.
        summary: the fleet runner's summary (status, counts, engine, workers, wall time).
        header: 'model', 'mode', 'topics', 'thresholds', 'latency_definition'.
    """
    read = [r for r in rows if r['status'] != 'error']
    pairs = {key: sum(r['pairs'][key] for r in read) for key in
             ('synchronised', 'processed', 'dropped', 'sync_misses', 'bad_inputs')}
    now = sum(r['pairs']['processed'] for r in read if not r.get('reused'))
    return {
        'kind': 'fleet-offline', **header, 'status': summary['status'],
        'partial': summary['status'] != 'complete', 'bags': unit_counts(summary),
        'images': {m: sum(r['images'][m] for r in read) for m in ('rgb', 'thermal')},
        'pairs': pairs, 'latency_ms': latency_stats(latencies_s), 'scores': scores,
        'throughput_hz': now / summary['wall_s'] if now and summary['wall_s'] > 0 else None,
        'wall_s': summary['wall_s'],
        'execution': execution(summary), 'workers': summary['worker_stats'],
        'rows': list(rows), 'errors': errors(rows),
    }


def _fleet_tables(report: dict) -> list[str]:
    """Markdown: one row per bag, the errors, the workers of this run."""
    mode = report['mode']
    lines = ['## Bags', '', f'| bag | status | pairs | mAP ({mode}) | latency p50 ms | wall s | '
             'worker |', '|---|---|---|---|---|---|---|']
    for row in report['rows']:
        read = row['status'] != 'error'
        status = row['status'] + (' (earlier run)' if row.get('reused') else '')
        lines.append(f"| `{row['input']}` | {status} | "
                     f"{row['pairs']['processed'] if read else '–'} | "
                     f"{fmt((row.get('map') or {}).get(mode))} | "
                     f"{fmt(row['latency_ms']['p50'] if read else None, digits=1)} | "
                     f"{fmt(row['wall_s'], digits=1)} | {row.get('worker') or '–'} |")
    lines += error_lines(report['errors'])
    return lines + worker_lines(report['workers'], 'bags', 'pairs') + ['']


def fleet_markdown(report: dict) -> str:
    """The fleet ``report.md``."""
    lines = ['# UNIV fleet replay report (offline)', '']
    bags, pairs, lat = report['bags'], report['pairs'], report['latency_ms']
    if report['partial']:
        lines += [f"**{report['status'].upper()}**: {bags['error']} of {bags['total']} bags "
                  f"failed, {bags['partial']} damaged (read up to the damage); see Errors", '']
    run = report['execution']
    lines += [f"- bags: {bags['total']} ({bags['ok']} ok, {bags['partial']} partial, "
              f"{bags['error']} failed); {bags['ran']} run now, {bags['reused']} from an "
              f"earlier run", f"- model: `{report['model'] or '(default model)'}`, mode "
              f"{report['mode']}",
              f"- pairs: {pairs['synchronised']} synchronised, {pairs['processed']} processed, "
              f"{pairs['sync_misses']} sync misses, {pairs['bad_inputs']} bad inputs",
              f"- latency ({report['latency_definition']}) over all {lat['count']} pairs: p50 "
              f"{fmt(lat['p50'], digits=1)} ms, p95 {fmt(lat['p95'], digits=1)} ms, p99 "
              f"{fmt(lat['p99'], digits=1)} ms",
              f"- throughput: {fmt(report['throughput_hz'], digits=2)} pairs/s: pairs run now "
              f"/ {fmt(report['wall_s'], digits=1)} s wall, worker start-up included "
              f"({run['engine']}, {run['workers']} workers)"]
    if report.get('thresholds'):
        cut = report['thresholds']
        lines.append(f"- detection scores: mAP from every box >= {cut['map_from']} (COCO "
                     f"protocol) of every pair of every bag together")
    lines += ['', *_score_lines(report.get('scores') or {}), *_fleet_tables(report)]
    plots = (report.get('outputs') or {}).get('plots', [])
    lines += ['## Files', '', '- per bag: `bags/<key>/` (output bag, report, overlays)']
    lines += [f'- `{path}`' for path in plots]
    return '\n'.join(lines) + '\n'


def write_fleet_report(folder: Path, report: dict, latencies_s: Sequence[float]) -> dict:
    """Write the fleet's ``report.json``, ``report.md`` and plots into ``folder``."""
    plots = write_plots(folder, report, latencies_s)
    report = json_safe({**report, 'outputs': {'bags': 'bags', 'plots': plots}})
    write_json(folder / 'report.json', report)
    text = fleet_markdown(report)
    atomic_write(folder / 'report.md', lambda tmp: tmp.write_text(text))
    return report
