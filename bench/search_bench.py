"""Time a paper-scale SpaceEvo space search on the LUT, and check how stable its answer is across seeds.

    python bench/search_bench.py                      # 5,000 spaces, 100,000 samples, 5 constraints (+ random)
    python bench/search_bench.py --quick              # 1,000 spaces, 20,000 samples
    python bench/search_bench.py --agreement --seeds 5 [--spaces 5000 --samples 100000]

Timing: LUT load, aging evolution (P=500, S=125) and the random baseline with the same budget, each
in seconds and evaluated spaces per second; the last line is one JSON object.
Agreement: the evolution's best space for each seed, and per stage how many seeds chose the most
common block type (and width window). The published space (``spaceevo@vnni``: onnxw-151122-023231)
is scored alongside for reference.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import Counter

from search.lut import LUT_RESOLUTIONS, load_lut
from search.qt_score import LutEvaluator, QTSettings
from search.space_evo import EvolutionSettings, aging_evolution, random_search
from spaces import SearchSpace, get_hyperspace

PUBLISHED = {"onnxw": "onnxw-151122-023231", "mobilew": "mobilew-122222-155400"}


def _evaluator(lut, args, seed: int) -> LutEvaluator:
    qt = QTSettings(tuple(args.constraints), args.samples, args.top_k)
    return LutEvaluator(lut, qt, {r: args.fixed_ms for r in LUT_RESOLUTIONS}, seed)


def timing(args, lut) -> dict:
    hs = get_hyperspace(args.hyperspace)
    cfg = EvolutionSettings(args.population, args.sample, args.spaces, args.seed)
    out: dict = {"bench": "search_space", "hyperspace": hs.name, "spaces": args.spaces, "samples": args.samples,
                 "constraints": args.constraints, "top_k": args.top_k, "population": args.population,
                 "sample": args.sample, "seed": args.seed, "cpu": platform.processor() or platform.machine(),
                 "cores": os.cpu_count()}
    runs = [("evolution", aging_evolution)] + ([("random", random_search)] if args.random_baseline else [])
    for name, fn in runs:
        ev = _evaluator(lut, args, args.seed)
        t0 = time.perf_counter()
        trace = fn(hs, ev, cfg)
        dt = time.perf_counter() - t0
        out[f"{name}_s"] = round(dt, 2)
        out[f"{name}_spaces_per_s"] = round(trace.evaluated / dt, 1)
        out[f"{name}_best"] = {"space": trace.best[0], "score": round(trace.best[1], 6)}
        out[f"{name}_duplicates_skipped"] = trace.duplicates_skipped
        print(f"{name:9s}: {trace.evaluated} spaces in {dt:7.1f} s = {trace.evaluated / dt:7.1f} spaces/s; "
              f"best {trace.best[0]} Q-T {trace.best[1]:.5f} ({trace.duplicates_skipped} repeated children skipped)")
    out["search_total_s"] = round(sum(out[f"{n}_s"] for n, _ in runs), 2)
    return out


def agreement(args, lut) -> dict:
    hs = get_hyperspace(args.hyperspace)
    bests: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    for seed in range(args.seed, args.seed + args.seeds):
        trace = aging_evolution(hs, _evaluator(lut, args, seed),
                                EvolutionSettings(args.population, args.sample, args.spaces, seed))
        bests.append(trace.best)
        print(f"seed {seed}: best {trace.best[0]}  Q-T {trace.best[1]:.5f}")
    spaces = [SearchSpace.parse(s) for s, _ in bests]
    per_stage = []
    for i, st in enumerate(hs.stages):
        blocks = Counter(hs.blocks[s.blocks[i]].name for s in spaces)
        windows = Counter(s.windows[i] for s in spaces)
        (block, nb), (window, nw) = blocks.most_common(1)[0], windows.most_common(1)[0]
        per_stage.append({"stage": st.name, "block": block, "block_agree": nb, "blocks": dict(blocks),
                          "window": window, "window_agree": nw})
        print(f"{st.name}: block {block:9s} in {nb}/{len(spaces)} seeds {dict(blocks)};  window {window} in "
              f"{nw}/{len(spaces)}")
    pub = PUBLISHED.get(hs.name)
    pub_score = _evaluator(lut, args, args.seed)(SearchSpace.parse(pub)) if pub else None
    if pub:
        print(f"published {pub}: Q-T {pub_score:.5f} (seed {args.seed} samples)")
    return {"bench": "search_space_agreement", "hyperspace": hs.name, "seeds": args.seeds, "spaces": args.spaces,
            "samples": args.samples, "constraints": args.constraints, "best": [[s, round(v, 6)] for s, v in bests],
            "per_stage": per_stage, "published": pub, "published_score": pub_score,
            "mean_block_agreement": sum(p["block_agree"] for p in per_stage) / (len(per_stage) * len(spaces)),
            "elapsed_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hyperspace", default="onnxw")
    ap.add_argument("--constraints", default="8,10,15,20,25", type=lambda s: [float(v) for v in s.split(",")])
    ap.add_argument("--spaces", type=int, default=5000)
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--top-k", type=int, default=50)
    ap.add_argument("--population", type=int, default=500)
    ap.add_argument("--sample", type=int, default=125)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fixed-ms", type=float, default=0.0, help="fixed part (first_conv+stage0+head), ms")
    ap.add_argument("--no-random-baseline", dest="random_baseline", action="store_false")
    ap.add_argument("--quick", action="store_true", help="1,000 spaces and 20,000 samples")
    ap.add_argument("--agreement", action="store_true", help="best block type per stage over --seeds seeds")
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    if args.quick:
        args.spaces, args.samples = min(args.spaces, 1000), min(args.samples, 20_000)
    t0 = time.perf_counter()
    lut = load_lut(args.hyperspace)
    load_s = time.perf_counter() - t0
    print(f"LUT {lut.folder}: {len(lut.tables)} stage tables loaded in {load_s:.2f} s")
    out = agreement(args, lut) if args.agreement else timing(args, lut)
    out["lut_load_s"] = round(load_s, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
