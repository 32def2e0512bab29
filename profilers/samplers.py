"""Kernel-config samplers for predictor training data (nn-Meter style, for INT8).

* :func:`prior_configs`: the *prior* distribution of a kernel type is the set of configurations
  that actually occur in the two hyperspaces: we sample random subnets of random search spaces of
  ``onnxw`` and ``mobilew``, collect their kernels, de-duplicate, and draw from that pool. This
  keeps training data where predictions will be asked for (nn-Meter sampled from a generic prior).
  Configs that nearly every subnet contains (the stem conv at each resolution and width) come first,
  see :func:`common_configs`.
* :func:`fine_grained`: around given (badly predicted) configs, neighbours one step away in each
  feature (channels +-8/16, the adjacent input size, the other kernel sizes), de-duplicated
  against everything already planned or measured. nn-Meter's sampler repeated configs; ours never
  returns a config twice.
"""
from __future__ import annotations

import random
from functools import lru_cache
from typing import Iterable

from exporters.kernel_config import KernelConfig
from spaces import HYPERSPACES, resolve
from spaces.sampling import random_space, sample_subnet

HW_VALUES = (1, 7, 8, 10, 11, 12, 13, 14, 16, 20, 22, 24, 26, 28, 40, 44, 48, 52, 56, 80, 88, 96, 104, 112, 160, 176,
             192, 208, 224)


@lru_cache(maxsize=4)
def kernel_pool(n_subnets: int = 600, seed: int = 0) -> dict[str, tuple[KernelConfig, ...]]:
    """Distinct kernel configs per type, from ``n_subnets`` random subnets of random spaces."""
    return {t: tuple(sorted(d, key=lambda c: c.slug())) for t, d in _pool_counts(n_subnets, seed).items()}


@lru_cache(maxsize=4)
def _pool_counts(n_subnets: int = 600, seed: int = 0) -> dict[str, dict[KernelConfig, int]]:
    """Per type: each distinct config and the number of sampled subnets that contain it."""
    rng = random.Random(seed)
    pool: dict[str, dict[KernelConfig, int]] = {}
    names = sorted(HYPERSPACES)
    for i in range(n_subnets):
        sp = random_space(names[i % len(names)], rng)
        net = resolve(sp, sample_subnet(sp, "random", rng))
        for cfg in {KernelConfig.from_kernel(k) for k in net.kernels()}:
            d = pool.setdefault(cfg.type, {})
            d[cfg] = d.get(cfg, 0) + 1
    return dict(sorted(pool.items()))


def common_configs(kernel_type: str, min_share: float = 0.02, n_subnets: int = 600) -> list[KernelConfig]:
    """Configs that occur in at least ``min_share`` of random subnets, most common first.

    Drawing uniformly from the *distinct* configs all but skips these: the stem conv (3 input
    channels at the input resolution, in every network) is a handful of configs among thousands of
    middle-layer ones, yet it is one of the slowest kernels per FLOP. Measured on an Intel Xeon, the
    forest predicted 0.21 ms for a 224x224 stem that takes 0.83 ms, because it had seen no such conv."""
    counts = _pool_counts(n_subnets).get(kernel_type, {})
    common = [c for c, n in counts.items() if n >= min_share * n_subnets]
    return sorted(common, key=lambda c: (-counts[c], c.slug()))


def kernel_types() -> list[str]:
    return list(kernel_pool())


def prior_configs(kernel_type: str, n: int, seed: int = 0) -> list[KernelConfig]:
    """``n`` configs of the type drawn from the hyperspaces' pool. Types with a thin pool (the fixed
    head has one ``fc`` and three ``global-avgpool`` configs) are padded with fine-grained
    neighbours, or a predictor could never be trained for them and every subnet would be unknown."""
    pool = kernel_pool()
    if kernel_type not in pool:
        raise ValueError(f"kernel type: {kernel_type!r} is not allowed; allowed: {', '.join(pool)}")
    configs = list(pool[kernel_type])
    random.Random(f"{seed}-{kernel_type}").shuffle(configs)
    common = common_configs(kernel_type)[: n // 4]  # a quarter at most: the prior stays the hyperspaces' spread
    seen = set(common)
    configs = (common + [c for c in configs if c not in seen])[:n]
    frontier = list(configs)
    while len(configs) < n and frontier:
        frontier = fine_grained(frontier, per_seed=8, exclude=configs, seed=seed)
        configs += frontier[: n - len(configs)]
    return configs


def _neighbours(c: KernelConfig) -> Iterable[KernelConfig]:
    hw_i = min(range(len(HW_VALUES)), key=lambda i: abs(HW_VALUES[i] - c.hw))
    changes: list[dict] = []
    for d in (-16, -8, 8, 16):
        changes.append({"cin": c.cin + d})
        if c.cout:
            changes.append({"cout": c.cout + d})
    for j in (hw_i - 1, hw_i + 1):
        if 0 <= j < len(HW_VALUES) and c.type != "fc":
            changes.append({"hw": HW_VALUES[j]})
    if c.op in ("conv", "dwconv") and c.kernel > 1:
        changes += [{"kernel": k} for k in (3, 5, 7) if k != c.kernel]
    if c.type == "se":
        changes += [{"mid": c.mid + d} for d in (-8, 8)]
    for ch in changes:
        data = {**c.model_dump(), **ch}
        if c.op in ("dwconv", "se", "global", "add", "act"):  # channel-preserving: cout follows cin
            data["cout"] = data["cin"] if c.cout else 0
        try:
            n = KernelConfig(**data)
        except ValueError:
            continue
        if n.cin >= 8 and (n.cout == 0 or n.cout >= 8) and n != c:
            yield n


def fine_grained(seeds: Iterable[KernelConfig], per_seed: int = 4, exclude: Iterable[KernelConfig] = (),
                 seed: int = 0) -> list[KernelConfig]:
    """Up to ``per_seed`` new neighbours of each seed config, never one in ``exclude`` or twice."""
    rng = random.Random(seed)
    seen = set(exclude) | set(seeds)
    out: list[KernelConfig] = []
    for s in seeds:
        cands = [n for n in dict.fromkeys(_neighbours(s)) if n not in seen]
        rng.shuffle(cands)
        for n in cands[:per_seed]:
            seen.add(n)
            out.append(n)
    return out
