"""Per-iteration schedules (as in DINO/UNIV: linear warm-up, then cosine)."""

import math


def cosine_schedule(base: float, final: float, total_steps: int, warmup_steps: int = 0,
                    warmup_start: float = 0.0) -> list[float]:
    """Values for steps 0..total_steps-1: linear warm-up to ``base``, cosine down to ``final``."""
    if total_steps <= 0 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(f'bad schedule: total_steps={total_steps}, warmup_steps={warmup_steps}')
    values = [warmup_start + (base - warmup_start) * i / warmup_steps for i in range(warmup_steps)]
    decay = total_steps - warmup_steps
    values += [final + 0.5 * (base - final) * (1 + math.cos(math.pi * i / decay))
               for i in range(decay)]
    return values
