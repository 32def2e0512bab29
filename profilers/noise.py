"""Noise floor: the same model measured repeatedly, spread over minutes.

For each estimator (median, p10, min, mean) we report how far the repeated records fall apart:
spread = (max - min) / median over the records, and the coefficient of variation. This is what
chose p10 as the protocol's headline estimator, and it is the number the README quotes.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from statistics import mean, median, pstdev

from .measurement import Measurement
from .protocol import Protocol
from .worker import Profiler

ESTIMATORS = ("median_ms", "p10_ms", "min_ms", "mean_ms")


def repeatability(records: list[Measurement]) -> dict[str, dict[str, float]]:
    out = {}
    for est in ESTIMATORS:
        xs = [getattr(r, est) for r in records if r.ok]
        if len(xs) < 2:
            continue
        m = median(xs)
        out[est] = {"spread_pct": 100 * (max(xs) - min(xs)) / m, "cv_pct": 100 * pstdev(xs) / mean(xs),
                    "median": m}
    return out


def noise_floor(model: str | Path, backend: str, repeats: int = 20, gap_s: float = 6.0,
                protocol: Protocol | None = None, core: int | None = None, progress=None) -> dict:
    records: list[Measurement] = []
    with Profiler(backend, core=core, protocol=protocol or Protocol()) as prof:
        for i in range(repeats):
            records.append(prof.measure(model))
            if progress:
                progress(i + 1, repeats, records[-1])
            if i + 1 < repeats:
                time.sleep(gap_s)
    return {"model": str(model), "backend": backend, "repeats": repeats, "gap_s": gap_s,
            "fingerprint": records[0].fingerprint.model_dump() if records[0].fingerprint else None,
            "repeatability": repeatability(records), "stable": sum(r.stable for r in records),
            "records": [r.model_dump() for r in records]}


def write_noise_report(result: dict, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    name = f"noise-{result['backend']}"
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    rows = [f"| {est[:-3]} | {v['median']:.3f} | {v['spread_pct']:.1f}% | {v['cv_pct']:.1f}% |"
            for est, v in result["repeatability"].items()]
    text = "\n".join([
        f"# Noise floor: {result['backend']}", "",
        f"`{Path(result['model']).name}` measured {result['repeats']} times, {result['gap_s']:.0f} s apart; "
        f"{result['stable']} of {result['repeats']} records stable.", "",
        "| estimator | median of records (ms) | spread (max-min)/median | CV |", "|---|---|---|---|", *rows, ""])
    (out / f"{name}.md").write_text(text)
    return out / f"{name}.md"
