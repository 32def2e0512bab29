"""SpaceEvo vocabulary: hyperspaces, search spaces, subnets, their encodings, FLOPs and kernel lists.

This package imports nothing else of ours; every other package builds on it.
"""
from .encoding import SearchSpace, Subnet
from .errors import SpaceError
from .hyperspace import HYPERSPACES, MOBILEW, ONNXW, BlockType, HyperSpace, get_hyperspace, make_divisible
from .kernels import Kernel, network_kernels
from .network import Layer, Network, network_from_json, resolve

__all__ = [
    "HYPERSPACES", "MOBILEW", "ONNXW", "BlockType", "HyperSpace", "Kernel", "Layer", "Network", "SearchSpace",
    "SpaceError", "Subnet", "get_hyperspace", "make_divisible", "network_from_json", "network_kernels", "resolve",
]
