"""SpaceEvo search-space evolution (paper Algorithm 1) and its random-search baseline (Fig. 11).

Aging evolution (Real et al. 2019) over search spaces ``<hyperspace>-<6 blocks>-<6 windows>``:

1. the initial population is ``P`` uniformly random, distinct spaces (every stage's block *and* window
   random; the reference's ``random_sample`` accidentally pins the blocks to ``121222`` and seeds the
   population with the homogeneous spaces -- neither is copied here);
2. each step samples ``S`` members, takes the best as parent, picks one stage at random and makes two
   children on that stage, as the paper describes: child 1 changes its block type, child 2 its width
   window (the reference draws a separate stage for each; the paper's text and example use one);
3. a child joins the population (the oldest member leaves) only if it was never evaluated before, as in
   the reference; the budget ``N`` counts distinct evaluated spaces, initial population included
   (reference ``--cycles``: ``while len(history) < cycles``).

The random baseline evaluates ``N`` distinct uniformly random spaces. Both record best-so-far per
evaluation and, every ``snapshot_every`` evaluations, the top-10 spaces so far (Fig. 11).
Randomness: ``random.Random`` streams spawned from the seed (one for evolution, one for the baseline),
through :mod:`spaces.sampling`; the score function brings its own seeded randomness.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from spaces import HyperSpace, SearchSpace
from spaces.sampling import mutate_space_block, mutate_space_window, random_space

from .qt_score import QTScore

Evaluate = Callable[[SearchSpace], float]
OnStep = Callable[[int, float], None]  # (evaluated so far, best score so far)


@dataclass(frozen=True)
class EvolutionSettings:
    """Paper / reference defaults: P = 500, S = 125, N = 5,000 spaces."""

    population: int = 500
    sample: int = 125
    spaces: int = 5_000
    seed: int = 0
    snapshot_every: int = 500
    top_n: int = 10
    max_stall: int = 100_000  # proposals in a row that were all seen before -> stop (tiny hyperspaces)

    def __post_init__(self) -> None:
        if self.population < 2:
            raise ValueError(f"population={self.population}; expected >= 2")
        if not 1 <= self.sample <= self.population:
            raise ValueError(f"sample={self.sample}; expected 1..population ({self.population})")
        if self.spaces < self.population:
            raise ValueError(f"spaces={self.spaces}; expected >= population ({self.population})")
        if self.seed < 0:
            raise ValueError(f"seed={self.seed}; expected >= 0")


@dataclass
class SearchTrace:
    """Everything one search did, in evaluation order."""

    method: str
    history: list[tuple[str, float]] = field(default_factory=list)
    best_so_far: list[float] = field(default_factory=list)
    snapshots: list[dict] = field(default_factory=list)
    duplicates_skipped: int = 0
    stopped_early: str | None = None

    @property
    def evaluated(self) -> int:
        return len(self.history)

    def top(self, n: int) -> list[tuple[str, float]]:
        """Best ``n`` (space, score), ties broken by evaluation order."""
        order = sorted(range(len(self.history)), key=lambda i: (-self.history[i][1], i))
        return [self.history[i] for i in order[:n]]

    @property
    def best(self) -> tuple[str, float]:
        return self.top(1)[0]

    def to_json(self) -> dict:
        space, score = self.best
        return {"method": self.method, "evaluated": self.evaluated, "best_space": space, "best_score": score,
                "duplicates_skipped": self.duplicates_skipped, "stopped_early": self.stopped_early,
                "top10": [{"space": s, "score": v} for s, v in self.top(10)],
                "snapshots": self.snapshots, "best_so_far": self.best_so_far,
                "history": [[s, v] for s, v in self.history]}


class _Recorder:
    """Appends evaluations to a trace; keeps best-so-far and the periodic top-n snapshots."""

    def __init__(self, trace: SearchTrace, evaluate: Evaluate, every: int, top_n: int, on_step: OnStep | None):
        self.trace, self.evaluate, self.every, self.top_n, self.on_step = trace, evaluate, every, top_n, on_step
        self.seen: set[str] = set()
        self.best = -np.inf

    def add(self, space: SearchSpace) -> float:
        key = space.to_string()
        score = float(self.evaluate(space))
        self.seen.add(key)
        self.trace.history.append((key, score))
        self.best = max(self.best, score)
        self.trace.best_so_far.append(self.best)
        n = self.trace.evaluated
        if n % self.every == 0:
            self.snapshot()
        if self.on_step is not None:
            self.on_step(n, self.best)
        return score

    def snapshot(self) -> None:
        n = self.trace.evaluated
        if not self.trace.snapshots or self.trace.snapshots[-1]["evaluated"] != n:
            self.trace.snapshots.append({"evaluated": n, "top": [[s, v] for s, v in self.trace.top(self.top_n)]})


def rng_streams(seed: int) -> tuple[random.Random, random.Random]:
    """Independent ``random.Random`` streams for evolution and for the random baseline."""
    evo, rnd = np.random.SeedSequence(seed).spawn(2)
    return random.Random(int(evo.generate_state(1)[0])), random.Random(int(rnd.generate_state(1)[0]))


def make_children(parent: SearchSpace, rng: random.Random) -> tuple[int, SearchSpace, SearchSpace]:
    """One random stage ``i`` (0-based); child 1 changes its block type, child 2 its width window."""
    stage = rng.randrange(len(parent.hyperspace.stages))
    return stage, mutate_space_block(parent, rng, stage=stage), mutate_space_window(parent, rng, stage=stage)


def _random_distinct(hs: HyperSpace, rng: random.Random, rec: _Recorder, max_stall: int) -> SearchSpace | None:
    for _ in range(max_stall):
        s = random_space(hs, rng)
        if s.to_string() not in rec.seen:
            return s
        rec.trace.duplicates_skipped += 1
    return None


def aging_evolution(hs: HyperSpace, evaluate: Evaluate, settings: EvolutionSettings = EvolutionSettings(),
                    on_step: OnStep | None = None) -> SearchTrace:
    """Algorithm 1: random population, then parent = best of ``S`` sampled, two children, oldest leave."""
    rng, _ = rng_streams(settings.seed)
    trace = SearchTrace("evolution")
    rec = _Recorder(trace, evaluate, settings.snapshot_every, settings.top_n, on_step)
    population: list[tuple[SearchSpace, float]] = []  # oldest first
    while len(population) < settings.population:
        s = _random_distinct(hs, rng, rec, settings.max_stall)
        if s is None:
            trace.stopped_early = "the hyperspace ran out of new spaces for the initial population"
            rec.snapshot()
            return trace
        population.append((s, rec.add(s)))
    stall = 0
    while trace.evaluated < settings.spaces:
        picked = rng.sample(range(len(population)), settings.sample)
        parent = max((population[i] for i in picked), key=lambda ind: ind[1])[0]  # first of equal scores
        _, child1, child2 = make_children(parent, rng)
        for child in (child1, child2):
            if trace.evaluated >= settings.spaces:
                break
            if child.to_string() in rec.seen:
                trace.duplicates_skipped += 1
                stall += 1
                continue
            stall = 0
            population.append((child, rec.add(child)))
            population.pop(0)
        if stall >= settings.max_stall:
            trace.stopped_early = f"{stall} children in a row had been evaluated before"
            break
    rec.snapshot()
    return trace


def random_search(hs: HyperSpace, evaluate: Evaluate, settings: EvolutionSettings = EvolutionSettings(),
                  on_step: OnStep | None = None) -> SearchTrace:
    """The baseline of Fig. 11: ``settings.spaces`` distinct uniformly random spaces, same budget."""
    _, rng = rng_streams(settings.seed)
    trace = SearchTrace("random")
    rec = _Recorder(trace, evaluate, settings.snapshot_every, settings.top_n, on_step)
    while trace.evaluated < settings.spaces:
        s = _random_distinct(hs, rng, rec, settings.max_stall)
        if s is None:
            trace.stopped_early = "the hyperspace ran out of new spaces"
            break
        rec.add(s)
    rec.snapshot()
    return trace


# --- a whole `search space` run: the evaluator, both searches, JSON and plot ------------------------------
class SpaceScorer(Protocol):
    """What a latency source must offer to drive the space search (see :class:`search.qt_score.LutEvaluator`;
    a service-backed scorer plugs in through ``search.__main__._make_scorer``)."""

    def __call__(self, space: SearchSpace) -> float: ...
    def evaluate(self, space: SearchSpace) -> QTScore: ...
    def best_subnets(self, space: SearchSpace, per_constraint: int = 3) -> list[dict]: ...


def _details(scorer: SpaceScorer, trace: SearchTrace) -> dict:
    space = SearchSpace.parse(trace.best[0])
    qt = scorer.evaluate(space)
    return {"space": trace.best[0], **qt.to_json(), "best_subnets": scorer.best_subnets(space)}


def run_space_search(hs: HyperSpace, scorer: SpaceScorer, settings: EvolutionSettings, random_baseline: bool = True,
                     progress: bool = True) -> dict:
    """Evolution (and the random baseline) with a rich progress bar; returns the JSON-ready results.

    Everything but ``timing`` is a function of the inputs and the seed.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    runs: list[tuple[str, Callable[..., SearchTrace]]] = [("evolution", aging_evolution)]
    if random_baseline:
        runs.append(("random", random_search))
    traces: dict[str, SearchTrace] = {}
    timing: dict[str, float] = {}
    with Progress(TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("best Q-T {task.fields[best]:.5f}"), TimeElapsedColumn(), disable=not progress,
                  transient=False) as bar:
        for name, fn in runs:
            task = bar.add_task(name, total=settings.spaces, best=float("nan"))
            step = lambda n, best, task=task: bar.update(task, completed=n, best=best)  # noqa: E731
            t0 = time.perf_counter()
            traces[name] = fn(hs, scorer, settings, on_step=step)
            timing[f"{name}_s"] = round(time.perf_counter() - t0, 3)
    result: dict = {"evolution": {**traces["evolution"].to_json(), "best": _details(scorer, traces["evolution"])}}
    result["random"] = ({**traces["random"].to_json(), "best": _details(scorer, traces["random"])}
                        if "random" in traces else None)
    result["timing"] = timing
    return result


def write_results(out_dir: Path, payload: dict) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "space_search.json"
    path.write_text(json.dumps(payload, indent=1, allow_nan=False))
    return path


def plot_search(payload: dict, path: Path) -> Path:
    """Fig. 11 style: top-10 Q-T scores every ``snapshot_every`` spaces, plus best-so-far, for both searches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"evolution": ("tab:red", "o", "space evolution"), "random": ("tab:blue", "^", "random search")}
    for name in ("random", "evolution"):
        run = payload.get(name)
        if not run:
            continue
        color, marker, label = styles[name]
        xs = [snap["evaluated"] for snap in run["snapshots"] for _ in snap["top"]]
        ys = [v for snap in run["snapshots"] for _, v in snap["top"]]
        ax.scatter(xs, ys, s=14, color=color, marker=marker, alpha=0.6, label=f"{label}: top-10 so far")
        ax.plot(np.arange(1, len(run["best_so_far"]) + 1), run["best_so_far"], color=color, lw=1.2,
                label=f"{label}: best so far")
    tops = [v for name in ("random", "evolution") if payload.get(name) for snap in payload[name]["snapshots"]
            for _, v in snap["top"]]
    if tops:  # zoom on the top-10 band (the first few random spaces would squash it)
        lo, hi = min(tops), max(tops)
        ax.set_ylim(lo - 0.25 * (hi - lo or 1e-3), hi + 0.1 * (hi - lo or 1e-3))
    s = payload["settings"]
    ax.set_xlabel("search spaces evaluated")
    ax.set_ylabel("Q-T score")
    ax.set_title(f"{s['hyperspace']}: constraints {s['constraints']} ms, seed {s['seed']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
