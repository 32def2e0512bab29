"""The kernel boundary format: one kernel to build, measure or predict, as nn-Meter's features.

A :class:`KernelConfig`'s fields are the nn-Meter kernel features (input size ``hw``, ``cin``, ``cout``,
``kernel``, ``stride``, SE ``mid``). It lives apart from :mod:`exporters.kernel_models` (which builds the
kernels in torch and Keras) so that predictors, the service and the dataset readers never import torch:
that import alone costs ~2.6 s, paid by every ``python -m predictors`` call and every service start.
``spaces.Kernel`` instances convert with :meth:`KernelConfig.from_kernel`.
"""
from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from spaces import Kernel
from spaces.kernels import kernel_activation, kernel_op

ACTS = ("relu", "relu6", "hswish", "swish")
KERNEL_TYPE_RE = re.compile(
    r"^(?:(?:conv|dwconv)-bn(?:-(?:relu|relu6|hswish|swish))?|dwconv|se|add(?:-(?:relu|relu6|hswish|swish))?"
    r"|global-avgpool|fc|act-(?:relu|relu6|hswish|swish|hsigmoid)|maxpool|avgpool|concat)$")
KERNEL_TYPES_HELP = ("conv-bn[-relu|-relu6|-hswish|-swish], dwconv-bn[-act], dwconv, se, add[-act], global-avgpool, "
                     "fc, act-<relu|relu6|hswish|swish|hsigmoid>, maxpool, avgpool, concat")


class KernelConfig(BaseModel):
    """One kernel to build and measure. ``concat`` joins a ``cin``- and a ``cout``-channel input."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str
    hw: int = Field(ge=1, le=1024)
    cin: int = Field(ge=1, le=8192)
    cout: int = Field(0, ge=0, le=8192)
    kernel: int = Field(1, ge=1, le=11)
    stride: int = Field(1, ge=1, le=4)
    mid: int = Field(0, ge=0, le=8192)

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        if not KERNEL_TYPE_RE.match(v):
            raise ValueError(f"unknown kernel type {v!r}; allowed: {KERNEL_TYPES_HELP}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "KernelConfig":
        if self.type.startswith(("conv", "fc", "concat")) and self.cout < 1:
            raise ValueError(f"{self.type} needs cout >= 1")
        if self.type == "se" and self.mid < 1:
            raise ValueError("se needs mid >= 1 (the bottleneck width)")
        if self.type.startswith(("conv", "dwconv", "maxpool", "avgpool")) and self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd, got {self.kernel}")
        return self

    @classmethod
    def from_kernel(cls, k: Kernel) -> "KernelConfig":
        return cls(type=k.type, hw=k.hw, cin=k.cin, cout=k.cout, kernel=k.kernel, stride=k.stride, mid=k.mid)

    @property
    def op(self) -> str:
        return kernel_op(self.type)

    @property
    def activation(self) -> str:
        return kernel_activation(self.type)

    def input_shapes(self) -> list[tuple[int, int, int, int]]:
        if self.op == "fc":
            return [(1, self.cin)]  # type: ignore[list-item]
        shape = (1, self.cin, self.hw, self.hw)
        if self.op == "add":
            return [shape, shape]
        if self.op == "concat":
            return [shape, (1, self.cout, self.hw, self.hw)]
        return [shape]

    def slug(self) -> str:
        return f"{self.type}_hw{self.hw}_ci{self.cin}_co{self.cout}_k{self.kernel}_s{self.stride}_m{self.mid}"
