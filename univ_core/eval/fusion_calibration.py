"""Calibrate the fusion's camera weights on labelled TRAINING pairs (never the evaluation ones).

Each camera's detector scores are calibrated on its own images, not against the other camera:
on msrs_mini the thermal head's false positives outscore the RGB head's true boxes, so an
unweighted fusion ranks them first and fused mAP falls below RGB alone. Scaling one camera's
scores by ``w`` in [0, 1] before fusion (``PredictorConfig.fusion_weights``) trusts it less; ``w``
is chosen by fused mAP50 over a small grid on training pairs, running the exact fused path of
the Predictor (:func:`univ_core.eval.downstream.evaluate`). The chosen weights are stored in the
model file (``ModelSpec.fusion_weights``), so every consumer of the model fuses the same way.
"""

from univ_core.eval.downstream import evaluate

GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # the down-weighted camera's weight


def candidate_weights(grid: tuple[float, ...] = GRID) -> list[tuple[float, float]]:
    """(rgb, thermal) pairs: one camera at 1, the other on ``grid``; (1, 1) first (wins ties)."""
    pairs = [(1.0, 1.0)]
    pairs += [(1.0, w) for w in grid if w < 1]
    pairs += [(w, 1.0) for w in grid if w < 1]
    return pairs


def calibrate_fusion(predictor, data, class_names: list[str] | None = None,
                     grid: tuple[float, ...] = GRID) -> dict:
    """Fused mAP50 of each candidate on ``data`` (labelled training pairs); the best one.

    Args:
        predictor: a :class:`~univ_core.inference.predictor.Predictor` (its weights are
            restored afterwards).
        data: a labelled detection split with ``rgb``, ``thermal`` and boxes per camera.
        class_names: the data's class names (default: ``data.class_names``).
        grid: weights tried for the down-weighted camera.

    Returns:
        {'weights': [rgb, thermal], 'map50': best fused mAP50, 'rgb_map50', 'ir_map50',
        'pairs': len(data), 'grid': [{'weights': [...], 'map50': ...}, ...]}.
    """
    saved = predictor.fusion_weights
    try:
        single, _ = evaluate('det', predictor, data, ['rgb', 'ir'], class_names=class_names)
        rows = []
        for weights in candidate_weights(grid):
            predictor.fusion_weights = weights
            fused, _ = evaluate('det', predictor, data, ['fused'], class_names=class_names)
            rows.append({'weights': list(weights), 'map50': fused['fused']['map50']})
    finally:
        predictor.fusion_weights = saved
    best = max(rows, key=lambda r: r['map50'])  # first of equals: (1, 1) when nothing helps
    return {'weights': best['weights'], 'map50': best['map50'],
            'rgb_map50': single['rgb']['map50'], 'ir_map50': single['ir']['map50'],
            'pairs': len(data), 'grid': rows}
