"""Sampling, mutation and crossover of subnets and search spaces (OFA / SpaceEvo style).

All randomness goes through a ``random.Random`` built from a seed so that searches repeat exactly.
"""
from __future__ import annotations

import random
from typing import Literal

from .encoding import SearchSpace, Subnet
from .errors import SpaceError
from .hyperspace import HyperSpace, get_hyperspace

SampleMode = Literal["min", "max", "random"]


def _rng(seed_or_rng: int | random.Random | None) -> random.Random:
    return seed_or_rng if isinstance(seed_or_rng, random.Random) else random.Random(seed_or_rng)


def sample_subnet(space: SearchSpace | str, mode: SampleMode = "random",
                  seed: int | random.Random | None = None) -> Subnet:
    """The smallest (``min``), largest (``max``) or a uniformly random subnet of ``space``."""
    if isinstance(space, str):
        space = SearchSpace.parse(space)
    if mode not in ("min", "max", "random"):
        raise SpaceError("sample mode", mode, ["min", "max", "random"])
    rng = _rng(seed)
    pick = {"min": min, "max": max, "random": rng.choice}[mode]
    stages = []
    for c in space.stage_choices():
        stages.append([(pick(c.kernels), pick(c.widths), pick(c.expands)) for _ in range(pick(c.depths))])
    return Subnet.from_stage_layers(stages, pick(space.hyperspace.resolutions))


def mutate_subnet(space: SearchSpace, subnet: Subnet, prob: float = 0.1,
                  seed: int | random.Random | None = None) -> Subnet:
    """Resample each choice (resolution, depth, kernel, width, expand) with probability ``prob``."""
    rng = _rng(seed)
    res = rng.choice(space.hyperspace.resolutions) if rng.random() < prob else subnet.resolution
    stages = []
    for c, layers in zip(space.stage_choices(), subnet.stage_layers()):
        d = rng.choice(c.depths) if rng.random() < prob else len(layers)
        new = []
        for i in range(d):
            k, w, e = layers[i] if i < len(layers) else (rng.choice(c.kernels), rng.choice(c.widths),
                                                         rng.choice(c.expands))
            if rng.random() < prob:
                k = rng.choice(c.kernels)
            if rng.random() < prob:
                w = rng.choice(c.widths)
            if rng.random() < prob:
                e = rng.choice(c.expands)
            new.append((k, w, e))
        stages.append(new)
    return Subnet.from_stage_layers(stages, res)


def crossover_subnets(a: Subnet, b: Subnet, seed: int | random.Random | None = None) -> Subnet:
    """Uniform crossover: each stage depth and each layer choice comes from either parent."""
    rng = _rng(seed)
    stages = []
    for la, lb in zip(a.stage_layers(), b.stage_layers()):
        d = len(la) if rng.random() < 0.5 else len(lb)
        new = []
        for i in range(d):
            options = [x[i] for x in (la, lb) if i < len(x)]
            new.append(rng.choice(options))
        stages.append(new)
    return Subnet.from_stage_layers(stages, a.resolution if rng.random() < 0.5 else b.resolution)


# --- search spaces (SpaceEvo) --------------------------------------------------------------------
def random_space(hyperspace: HyperSpace | str, seed: int | random.Random | None = None) -> SearchSpace:
    """A uniformly random search space: every stage draws its block type and window independently."""
    hs = get_hyperspace(hyperspace) if isinstance(hyperspace, str) else hyperspace
    rng = _rng(seed)
    return SearchSpace(hs, tuple(rng.randrange(len(hs.blocks)) for _ in hs.stages),
                       tuple(rng.randrange(st.num_windows) for st in hs.stages))


def mutate_space_block(space: SearchSpace, seed: int | random.Random | None = None,
                       stage: int | None = None) -> SearchSpace:
    """Change the block type of one stage (to a different one)."""
    rng = _rng(seed)
    hs = space.hyperspace
    i = rng.randrange(len(hs.stages)) if stage is None else stage
    blocks = list(space.blocks)
    blocks[i] = rng.choice([d for d in range(len(hs.blocks)) if d != blocks[i]])
    return SearchSpace(hs, tuple(blocks), space.windows)


def mutate_space_window(space: SearchSpace, seed: int | random.Random | None = None,
                        stage: int | None = None) -> SearchSpace:
    """Change the width window of one stage (to a different one)."""
    rng = _rng(seed)
    hs = space.hyperspace
    i = rng.randrange(len(hs.stages)) if stage is None else stage
    windows = list(space.windows)
    windows[i] = rng.choice([c for c in range(hs.stages[i].num_windows) if c != windows[i]])
    return SearchSpace(hs, space.blocks, tuple(windows))
