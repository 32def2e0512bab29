"""FLOPs (multiply-adds) and parameter counts, computed from the kernel list.

Counting follows the SpaceEvo reference's counter (AttentiveNAS-derived): conv and linear
multiply-adds only, no BN / activation / add / pooling; so our numbers are directly comparable to the
paper's Tables 2-3. Builders are checked against this count in the tests.
"""
from __future__ import annotations

from .kernels import network_kernels
from .network import Network


def network_macs(net: Network) -> int:
    return sum(k.macs() for k in network_kernels(net))


def network_params(net: Network) -> int:
    return sum(k.params() for k in network_kernels(net))


def per_stage_macs(net: Network) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in network_kernels(net):
        stage = k.layer.rsplit("_", 1)[0]
        out[stage] = out.get(stage, 0) + k.macs()
    return out
