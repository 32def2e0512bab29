"""Torch and Keras builders: same graph, same weights, same FLOPs as the analytic count."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from spaces import HYPERSPACES, SearchSpace, resolve
from spaces.sampling import sample_subnet
from exporters.keras_builder import build_keras_from_torch
from exporters.torch_builder import build_torch

from .conftest import PAPER_MFLOPS


def hooked_macs(model: nn.Module, shape) -> int:
    total = 0

    def hook(mod, _inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            total += mod.in_channels * out.numel() * mod.kernel_size[0] * mod.kernel_size[1] // mod.groups
        else:
            total += mod.in_features * mod.out_features

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(shape))
    for h in hs:
        h.remove()
    return total


@pytest.mark.parametrize("name", sorted(PAPER_MFLOPS))
def test_seqnet_builds_in_torch_and_keras(seqnets, name):
    net = resolve(*seqnets[name])
    tm = build_torch(net)
    assert hooked_macs(tm, tm.input_shape) == net.flops()
    assert sum(p.numel() for p in tm.parameters()) == net.params()
    km = build_keras_from_torch(tm, net)
    assert km.count_params() == net.params() + 2 * sum(  # Keras counts BN moving stats as (non-trainable) params
        m.num_features for m in tm.modules() if isinstance(m, nn.BatchNorm2d))
    x = np.random.default_rng(0).standard_normal(tm.input_shape).astype(np.float32)
    with torch.no_grad():
        yt = tm(torch.from_numpy(x)).numpy()
    yk = np.asarray(km(x.transpose(0, 2, 3, 1)))
    assert yt.shape == yk.shape == (1, 1000)
    assert np.abs(yt - yk).max() < 1e-3


def _one_block_type_spaces():
    rng = random.Random(11)
    for hs in HYPERSPACES.values():
        for b in hs.blocks:
            windows = tuple(rng.randrange(st.num_windows) for st in hs.stages)
            yield SearchSpace(hs, (b.digit,) * 6, windows)


@pytest.mark.parametrize("space", list(_one_block_type_spaces()), ids=str)
def test_torch_keras_agree_for_every_block_type(space):
    net = resolve(space, sample_subnet(space, "random", seed=sum(space.windows)))
    tm = build_torch(net, seed=1)
    km = build_keras_from_torch(tm, net)
    x = np.random.default_rng(1).standard_normal(tm.input_shape).astype(np.float32)
    with torch.no_grad():
        yt = tm(torch.from_numpy(x)).numpy()
    yk = np.asarray(km(x.transpose(0, 2, 3, 1)))
    assert np.abs(yt - yk).max() < 1e-3, f"{space}: max abs diff {np.abs(yt - yk).max():.2e}"
    assert np.abs(yt).max() > 0.1  # not a degenerate all-zero output


def test_trained_like_weights_keep_a_sane_scale(seqnets):
    net = resolve(*seqnets["SEQnet@vnni-A4"])
    tm = build_torch(net)
    with torch.no_grad():
        y = tm(torch.randn((4, *tm.input_shape[1:])))
    assert torch.isfinite(y).all() and 0.05 < y.std() < 50
