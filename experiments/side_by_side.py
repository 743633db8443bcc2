"""The alternating side-by-side timing loop shared by the speed scripts in this folder."""
from __future__ import annotations

import statistics
from typing import Callable

Run = Callable[[int, int], float]  # (steps, seed) -> environment steps per second


def alternate(ours: Run, theirs: Run, peer: str, steps: int, reps: int, warmup_steps: int) -> tuple[float, float]:
    """Warm both up once, then run rlkit and the peer in turn `reps` times (so background load hits both alike);
    print each rep and the medians with their ratio; return (rlkit median, peer median)."""
    ours(warmup_steps, 0), theirs(warmup_steps, 0)  # imports, allocator, first-call costs
    a, b = [], []
    for rep in range(reps):
        a.append(ours(steps, rep))
        b.append(theirs(steps, rep))
        print(f"rep {rep}: rlkit {a[-1]:,.0f} steps/s   {peer} {b[-1]:,.0f} steps/s   ratio {a[-1] / b[-1]:.2f}x",
              flush=True)
    mo, mt = statistics.median(a), statistics.median(b)
    print(f"median over {reps} reps of {steps:,} steps: rlkit {mo:,.0f} steps/s, {peer} {mt:,.0f} steps/s, "
          f"ratio {mo / mt:.2f}x")
    return mo, mt
