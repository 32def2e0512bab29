"""The adaptive loop (nn-Meter's adaptive data sampler, closed): train, find the configs the forests
predict worst (out-of-fold), measure new neighbours around them, retrain; stop when the held-out
kernel error stops improving or the round budget is spent.
"""
from __future__ import annotations

from pathlib import Path

from profilers.collect import collect

from .artifact import Predictor
from .train import train, worst_configs


def mean_rmspe(pred: Predictor) -> float:
    """Held-out RMSPE over kernel types, weighted by their held-out size."""
    ms = [k.metrics for k in pred.meta.kernels.values()]
    return sum(m["rmspe"] * m["n"] for m in ms) / max(1, sum(m["n"] for m in ms))


def adaptive_train(backend: str, data_dir: str | Path, device: str, rounds: int = 5, refine_top: int = 100,
                   round_budget_s: float = 600, min_gain: float = 0.02, threshold: float = 0.10,
                   progress=None) -> tuple[Predictor, list[float]]:
    data_dir = Path(data_dir)
    data = data_dir / "measurements.jsonl"
    pred = train(data, device)
    history = [mean_rmspe(pred)]
    for r in range(rounds):
        if progress:
            progress(r, history[-1], None)
        bad = [c for _, c in worst_configs(data, pred, threshold)[:refine_top]]
        if not bad:
            break
        collect(backend, [], data_dir, per_type=0, refine=bad, budget_s=round_budget_s)
        new = train(data, device)
        history.append(mean_rmspe(new))
        if progress:
            progress(r, history[-1], len(bad))
        improved = history[-1] < history[-2] * (1 - min_gain)
        if history[-1] < history[-2]:
            pred = new
        if not improved:
            break
    return pred, history
