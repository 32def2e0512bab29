"""The nn-Meter style kernel list of a network: the units a latency predictor sums over.

Every conv carries its folded BatchNorm and (by default) its activation, because exporters fold BN
and both runtimes fuse the common activations; whether an activation really fuses on a device is
measured by the profilers' fusion-rule tester, and the predictors split ``conv-bn-<act>`` into
``conv-bn`` + ``<act>`` where it does not. Kernel types:

``conv-bn[-act]``, ``dwconv-bn[-act]``, ``dwconv`` (inner 3x3 of a stacked k x k depthwise conv,
no BN), ``se`` (pool, reduce, ReLU, expand, hard-sigmoid, multiply), ``add``, ``add-relu``,
``global-avgpool``, ``fc``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .network import Layer, Network, conv_out

ACTIVATIONS = ("relu", "relu6", "hswish", "swish")


def kernel_op(kernel_type: str) -> str:
    """The operator of a kernel type: ``conv-bn-relu`` -> ``conv``, ``global-avgpool`` -> ``global``."""
    return kernel_type.split("-")[0]


def kernel_activation(kernel_type: str) -> str:
    """The activation a kernel type carries: ``conv-bn-relu6`` -> ``relu6``, ``act-hswish`` -> ``hswish``,
    ``add-relu`` -> ``relu``; ``none`` otherwise."""
    parts = kernel_type.split("-")
    if parts[0] == "act":
        return parts[1]
    if parts[0] in ("conv", "dwconv") and len(parts) == 3:
        return parts[2]
    if parts[0] == "add" and len(parts) == 2:
        return parts[1]
    return "none"


@dataclass(frozen=True)
class Kernel:
    """One kernel instance. ``hw`` is the input height (= width); ``mid`` the SE bottleneck width."""

    type: str
    hw: int
    cin: int
    cout: int
    kernel: int = 1
    stride: int = 1
    mid: int = 0
    layer: str = ""

    @property
    def out_hw(self) -> int:
        if self.type in ("global-avgpool", "fc", "se", "add", "add-relu") or self.type.startswith("act-"):
            return 1 if self.type in ("global-avgpool", "fc") else self.hw
        return conv_out(self.hw, self.kernel, self.stride)

    @property
    def op(self) -> str:
        return kernel_op(self.type)

    @property
    def activation(self) -> str:
        return kernel_activation(self.type)

    def macs(self) -> int:
        """Multiply-adds as the SpaceEvo reference counts them (conv and linear only)."""
        o = self.out_hw
        if self.op == "conv":
            return self.kernel * self.kernel * self.cin * self.cout * o * o
        if self.op == "dwconv":
            return self.kernel * self.kernel * self.cin * o * o
        if self.op == "se":
            return 2 * self.cin * self.mid
        if self.op == "fc":
            return self.cin * self.cout
        return 0

    def params(self) -> int:
        """Parameters of the unfused training graph (conv weights + BN affine, biases where present)."""
        bn = 2 * self.cout if "-bn" in self.type else 0
        if self.op == "conv":
            return self.kernel * self.kernel * self.cin * self.cout + bn
        if self.op == "dwconv":
            return self.kernel * self.kernel * self.cin + bn
        if self.op == "se":
            return self.cin * self.mid + self.mid + self.mid * self.cin + self.cin
        if self.op == "fc":
            return self.cin * self.cout + self.cout
        return 0

    def to_dict(self) -> dict:
        return asdict(self)


def _conv(kind: str, act: str, hw: int, cin: int, cout: int, k: int, s: int, layer: str) -> Kernel:
    t = f"{kind}-bn" + (f"-{act}" if act and act != "none" else "")
    return Kernel(t, hw, cin, cout, k, s, 0, layer)


def layer_kernels(l: Layer) -> list[Kernel]:
    """Kernels of one layer, in execution order."""
    n, act, hw, o = l.name, l.activation, l.in_hw, l.out_hw
    ks: list[Kernel] = []
    if l.kind == "conv":
        return [_conv("conv", act, hw, l.cin, l.cout, l.kernel, l.stride, n)]
    if l.kind == "pool_conv":
        return [Kernel("global-avgpool", hw, l.cin, l.cin, layer=n), _conv("conv", act, 1, l.cin, l.cout, 1, 1, n)]
    if l.kind == "linear":
        return [Kernel("fc", 1, l.cin, l.cout, layer=n)]
    if l.kind == "mbv1":
        ks += [_conv("dwconv", act, hw, l.cin, l.cin, l.kernel, l.stride, n),
               _conv("conv", act, o, l.cin, l.cout, 1, 1, n),
               _conv("dwconv", act, o, l.cout, l.cout, l.kernel, 1, n),
               _conv("conv", act, o, l.cout, l.cout, 1, 1, n)]
    elif l.kind == "mb":
        if l.hidden != l.cin:
            ks.append(_conv("conv", act, hw, l.cin, l.hidden, 1, 1, n))
        if l.k3_stack:
            steps = (l.kernel - 1) // 2
            h = hw
            for i in range(steps):
                s = l.stride if i == 0 else 1
                if i == steps - 1:
                    ks.append(_conv("dwconv", act, h, l.hidden, l.hidden, 3, s, n))
                else:
                    ks.append(Kernel("dwconv", h, l.hidden, l.hidden, 3, s, 0, n))
                h = conv_out(h, 3, s)
        else:
            ks.append(_conv("dwconv", act, hw, l.hidden, l.hidden, l.kernel, l.stride, n))
        if l.se_mid:
            ks.append(Kernel("se", o, l.hidden, l.hidden, mid=l.se_mid, layer=n))
        ks.append(_conv("conv", "none", o, l.hidden, l.cout, 1, 1, n))
    elif l.kind == "res":
        ks += [_conv("conv", act, hw, l.cin, l.hidden, 1, 1, n),
               _conv("conv", act, hw, l.hidden, l.hidden, l.kernel, l.stride, n)]
        if l.se_mid:
            ks.append(Kernel("se", o, l.hidden, l.hidden, mid=l.se_mid, layer=n))
        ks.append(_conv("conv", "none", o, l.hidden, l.cout, 1, 1, n))
    elif l.kind == "fused":
        ks.append(_conv("conv", act, hw, l.cin, l.hidden, l.kernel, l.stride, n))
        if l.se_mid:
            ks.append(Kernel("se", o, l.hidden, l.hidden, mid=l.se_mid, layer=n))
        ks.append(_conv("conv", "none", o, l.hidden, l.cout, 1, 1, n))
    else:  # pragma: no cover
        raise AssertionError(l.kind)
    if l.shortcut == "conv":
        ks.append(_conv("conv", "none", hw, l.cin, l.cout, 1, l.stride, n))
    if l.shortcut != "none":
        ks.append(Kernel("add-relu" if l.act_after_add else "add", o, l.cout, l.cout, layer=n))
    return ks


def network_kernels(net: Network) -> list[Kernel]:
    return [k for l in net.layers for k in layer_kernels(l)]
