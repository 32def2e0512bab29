"""``search subnet``: evolutionary search for the best subnet of one search space under each latency
constraint (OFA / SpaceEvo style), latencies from the service, accuracy from a source.

Accuracy sources:
* **LUT** (default): the block-wise KD lookup table. A candidate is a resolution plus one LUT row per stage
  (the rows that were actually evaluated); its accuracy proxy is 1 / (sum of the rows' NSR losses), as in the
  Q-T score. The subnet string built from the rows (first_conv and one stage0 layer at the stage-1 row's input
  width) is a real subnet of the space, and *its* latency is asked of the service, widths chained as the
  network will run (the LUT's own rows need not chain: a row's input width may differ from the previous row's
  output, which changes latency but, in the proxy, not accuracy).
* **callable** (``--accuracy module:function``): ``function(space: str, subnets: list[str]) -> list[float]``
  (higher is better), for users with a trained supernet; candidates are then any subnet strings of the space,
  mutated and crossed over with :mod:`spaces.sampling`.

Per constraint: population P (default 100), the best ``parent_ratio`` are parents, each generation makes
``mutation_ratio`` of the new population by mutation (``mutate_prob`` per choice) and the rest by crossover,
children over the constraint are redrawn; latencies of a generation go to the service in one request.
"""
from __future__ import annotations

import importlib
import random
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from spaces import SearchSpace, Subnet
from spaces.sampling import crossover_subnets, mutate_subnet, sample_subnet

from .lut import BlockLut


@dataclass(frozen=True)
class SubnetSettings:
    constraints: tuple[float, ...]
    population: int = 100
    iterations: int = 100
    parent_ratio: float = 0.25
    mutation_ratio: float = 0.5
    mutate_prob: float = 0.1
    seed: int = 0


def load_callable(spec: str) -> Callable[[str, list[str]], list[float]]:
    mod, _, fn = spec.partition(":")
    if not mod or not fn:
        raise ValueError(f"--accuracy: {spec!r} is not allowed; allowed: 'module:function' (function(space, subnets) "
                         "-> accuracies) or 'lut'")
    try:
        return getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"--accuracy: cannot load {spec!r} ({type(e).__name__}: {e})") from None


class LutGenome:
    """Candidates as (resolution, six LUT row indices); strings and losses derived."""

    def __init__(self, lut: BlockLut, space: SearchSpace):
        self.space, self.tables = space, lut.space_tables(space)
        self.resolutions = [r for r in lut.resolutions if r in space.hyperspace.resolutions]
        hs = space.hyperspace
        self.e0 = hs.stage0.block.expands[0] if hs.stage0.block.expands else 0.0
        self._small: dict[float, list[np.ndarray]] = {}

    def random(self, rng: random.Random) -> tuple:
        r = rng.choice(self.resolutions)
        return (r, *(rng.randrange(*t.slices[r]) for t in self.tables))

    def random_small(self, rng: random.Random, share: float = 0.1) -> tuple:
        """A candidate from the smallest rows (by MFLOPs, device-independent) at the lowest resolution: the
        seeds for a tight constraint that uniform draws rarely meet."""
        r = self.resolutions[0]
        small = self._small.get(share)
        if small is None:  # sorted once per genome, not once per candidate
            small = self._small[share] = [
                t.slices[r][0] + np.argsort(t.mflops[slice(*t.slices[r])], kind="stable")[
                    :max(1, int((t.slices[r][1] - t.slices[r][0]) * share))] for t in self.tables]
        return (r, *(int(rows[rng.randrange(len(rows))]) for rows in small))

    def mutate(self, g: tuple, rng: random.Random, prob: float) -> tuple:
        if rng.random() < prob:
            return self.random(rng)  # a new resolution needs rows of that resolution
        r = g[0]
        return (r, *(rng.randrange(*t.slices[r]) if rng.random() < prob else i for t, i in zip(self.tables, g[1:])))

    def crossover(self, a: tuple, b: tuple, rng: random.Random) -> tuple:
        if a[0] != b[0]:
            return a
        return (a[0], *(x if rng.random() < 0.5 else y for x, y in zip(a[1:], b[1:])))

    def loss(self, g: tuple) -> float:
        return float(sum(t.nsr_loss[i] for t, i in zip(self.tables, g[1:])))

    def string(self, g: tuple) -> str:
        r, rows = g[0], g[1:]
        c = int(self.tables[0].input_shape[rows[0]].split("x")[1])
        layers = [[(3, c, 0.0)], [(3, c, self.e0)]]
        for t, i in zip(self.tables, rows):
            stage = []
            for grp in t.stage_arch[i].split("_"):
                k, w, e = grp.split("#")
                stage.append((int(k), int(w), 0.0 if e in ("None", "0") else float(e)))
            layers.append(stage)
        return Subnet.from_stage_layers(layers, r).to_string()


class StringGenome:
    """Candidates as subnet strings of the space (the callable accuracy source)."""

    def __init__(self, space: SearchSpace):
        self.space = space

    def random(self, rng: random.Random) -> str:
        return sample_subnet(self.space, "random", rng).to_string()

    def mutate(self, g: str, rng: random.Random, prob: float) -> str:
        return mutate_subnet(self.space, Subnet.parse(g), prob, rng).to_string()

    def crossover(self, a: str, b: str, rng: random.Random) -> str:
        return crossover_subnets(Subnet.parse(a), Subnet.parse(b), rng).to_string()

    def string(self, g: str) -> str:
        return g


def evolve(space: SearchSpace, genome, latency: Callable[[list[str]], list[float]],
           accuracy: Callable[[list], list[float]], settings: SubnetSettings,
           on_step: Callable[[float, int, float], None] | None = None) -> dict:
    """Search under each constraint; returns best per constraint and every evaluated (latency, accuracy)."""
    rng = random.Random(settings.seed)
    seen: dict = {}  # genome -> (latency, accuracy)

    def evaluate(gs: list) -> None:
        new = [g for g in dict.fromkeys(gs) if g not in seen]
        if not new:
            return
        lat = latency([genome.string(g) for g in new])
        acc = accuracy(new)
        for g, l, a in zip(new, lat, acc):
            seen[g] = (float(l), float(a))

    results = []
    for c in settings.constraints:
        def fresh(n: int, make) -> list:
            out, tries = [], 0
            while len(out) < n and tries < 50:
                cands = [make() for _ in range(n - len(out))]
                evaluate(cands)
                out += [g for g in cands if seen[g][0] <= c]
                tries += 1
            return out

        pop = fresh(settings.population, lambda: genome.random(rng))
        if len(pop) < settings.population // 4 and hasattr(genome, "random_small"):
            pop += fresh(settings.population - len(pop), lambda: genome.random_small(rng))
        if not pop:
            results.append({"constraint_ms": c, "best": None,
                            "note": "no subnet found under it (random and smallest-row candidates all slower)"})
            continue
        n_parents = max(1, int(settings.parent_ratio * settings.population))
        n_mut = int(settings.mutation_ratio * settings.population)
        for it in range(settings.iterations):
            parents = sorted(pop, key=lambda g: -seen[g][1])[:n_parents]
            kids = fresh(n_mut, lambda: genome.mutate(rng.choice(parents), rng, settings.mutate_prob))
            kids += fresh(settings.population - n_parents - len(kids),
                          lambda: genome.crossover(rng.choice(parents), rng.choice(parents), rng))
            pop = parents + kids
            if on_step:
                on_step(c, it, seen[max(pop, key=lambda g: seen[g][1])][1])
        best = max(pop, key=lambda g: seen[g][1])
        results.append({"constraint_ms": c, "best": {"subnet": genome.string(best), "latency_ms": seen[best][0],
                                                     "accuracy": seen[best][1]}})
    evaluated = [(genome.string(g), lat, acc) for g, (lat, acc) in seen.items()]
    return {"per_constraint": results, "evaluated": len(evaluated), "pareto": pareto(evaluated)}


def pareto(points: Sequence[tuple[str, float, float]]) -> list[dict]:
    """Points no other point beats on both latency (lower) and accuracy (higher), by latency."""
    front, best = [], -np.inf
    for s, lat, acc in sorted(points, key=lambda p: (p[1], -p[2])):
        if acc > best:
            front.append({"subnet": s, "latency_ms": lat, "accuracy": acc})
            best = acc
    return front


def plot_front(payload: dict, out) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    f = payload["pareto"]
    ax.plot([p["latency_ms"] for p in f], [p["accuracy"] for p in f], "o-", ms=3, label="Pareto front")
    for c in payload["per_constraint"]:
        ax.axvline(c["constraint_ms"], color="grey", lw=0.5, ls=":")
        if c["best"]:
            ax.plot(c["best"]["latency_ms"], c["best"]["accuracy"], "r*", ms=10)
    ax.set_xlabel(f"predicted INT8 latency on {payload['settings']['device']} (ms)")
    ax.set_ylabel(payload["settings"]["accuracy_label"])
    ax.set_title(f"search subnet: {payload['settings']['space']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
