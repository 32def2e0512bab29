"""Torch builder: a plain ``nn.Module`` for any resolved :class:`spaces.Network`.

Module paths are deterministic (``body.<layer name>.<part>.conv``), and the Keras builder uses the
same paths with ``/`` separators turned into ``_``, so :func:`exporters.keras_builder.copy_weights`
can pair every conv, BN and linear without guessing.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from spaces import Layer, Network

ACTS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish, "swish": nn.SiLU}


def make_act(name: str) -> nn.Module:
    return ACTS[name]() if name in ACTS else nn.Identity()


class ConvBNAct(nn.Sequential):
    """conv (no bias) -> BN -> optional activation; padding k//2 like the reference."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: str = "none",
                 bn: bool = True):
        layers: list[tuple[str, nn.Module]] = [("conv", nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups,
                                                                  bias=not bn))]
        if bn:
            layers.append(("bn", nn.BatchNorm2d(cout)))
        if act != "none":
            layers.append(("act", make_act(act)))
        super().__init__(OrderedDict(layers))


class SE(nn.Module):
    """Squeeze-excitation: mean -> 1x1 (bias) -> ReLU -> 1x1 (bias) -> hard-sigmoid -> scale.

    The mean is ``adaptive_avg_pool2d(x, 1)`` (ONNX GlobalAveragePool), not ``x.mean((2, 3))`` (ReduceMean):
    onnxruntime quantizes GlobalAveragePool to QLinearGlobalAveragePool, while ReduceMean stays float between a
    DequantizeLinear and a QuantizeLinear, and in a whole network, where onnxruntime lays activations out NHWC,
    it reduces over axes (1, 2) on a slow path. Measured on an AMD EPYC (Zen 5) in onnxw-calib-12 (224x224):
    one SE's ReduceMean took 3.95 ms, all of them 5.3 ms of the network's 14.1 ms; a kernel model of the SE
    alone stays NCHW and never showed it, so the kernel sum missed it too."""

    def __init__(self, channels: int, mid: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, mid, 1, bias=True)
        self.relu = nn.ReLU()
        self.expand = nn.Conv2d(mid, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        y = nn.functional.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.expand(self.relu(self.reduce(y))))


class Block(nn.Module):
    """Every body block of both hyperspaces, configured by its :class:`spaces.Layer`."""

    def __init__(self, l: Layer):
        super().__init__()
        self.kind, self.shortcut, self.act_after_add = l.kind, l.shortcut, l.act_after_add
        act = l.activation
        if l.kind == "conv":
            self.conv = ConvBNAct(l.cin, l.cout, l.kernel, l.stride, act=act)
            return
        if l.kind == "mbv1":
            self.dw1 = ConvBNAct(l.cin, l.cin, l.kernel, l.stride, groups=l.cin, act=act)
            self.pw1 = ConvBNAct(l.cin, l.cout, 1, act=act)
            self.dw2 = ConvBNAct(l.cout, l.cout, l.kernel, 1, groups=l.cout, act=act)
            self.pw2 = ConvBNAct(l.cout, l.cout, 1, act=act)
        elif l.kind == "mb":
            if l.hidden != l.cin:
                self.expand = ConvBNAct(l.cin, l.hidden, 1, act=act)
            if l.k3_stack:
                steps = (l.kernel - 1) // 2
                self.dw = nn.Sequential(*[
                    ConvBNAct(l.hidden, l.hidden, 3, l.stride if i == 0 else 1, groups=l.hidden,
                              act=act if i == steps - 1 else "none", bn=i == steps - 1)
                    for i in range(steps)])
            else:
                self.dw = ConvBNAct(l.hidden, l.hidden, l.kernel, l.stride, groups=l.hidden, act=act)
            if l.se_mid:
                self.se = SE(l.hidden, l.se_mid)
            self.project = ConvBNAct(l.hidden, l.cout, 1)
        elif l.kind == "res":
            self.conv1 = ConvBNAct(l.cin, l.hidden, 1, act=act)
            self.conv2 = ConvBNAct(l.hidden, l.hidden, l.kernel, l.stride, act=act)
            if l.se_mid:
                self.se = SE(l.hidden, l.se_mid)
            self.conv3 = ConvBNAct(l.hidden, l.cout, 1)
            self.post_act = make_act(act)
        elif l.kind == "fused":
            self.fused = ConvBNAct(l.cin, l.hidden, l.kernel, l.stride, act=act)
            if l.se_mid:
                self.se = SE(l.hidden, l.se_mid)
            self.project = ConvBNAct(l.hidden, l.cout, 1)
        if l.shortcut == "conv":
            self.downsample = ConvBNAct(l.cin, l.cout, 1, l.stride)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "conv":
            return self.conv(x)
        sc = self.downsample(x) if self.shortcut == "conv" else x
        for part in self.children():
            if part is getattr(self, "downsample", None) or part is getattr(self, "post_act", None):
                continue
            x = part(x)
        if self.shortcut == "none":
            return x
        x = x + sc
        return self.post_act(x) if self.act_after_add else x


class Head(nn.Module):
    def __init__(self, final_expand: Layer, feature_mix: Layer, logits: Layer):
        super().__init__()
        self.final_expand = ConvBNAct(final_expand.cin, final_expand.cout, 1, act=final_expand.activation)
        self.feature_mix = ConvBNAct(feature_mix.cin, feature_mix.cout, 1, act=feature_mix.activation)
        self.logits = nn.Linear(logits.cin, logits.cout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.final_expand(x)
        x = self.feature_mix(nn.functional.adaptive_avg_pool2d(x, 1))  # GlobalAveragePool, see SE
        return self.logits(torch.flatten(x, 1))


class SubnetModel(nn.Module):
    """The whole network: ``body`` (first_conv..stage6 blocks) and ``head``."""

    def __init__(self, net: Network):
        super().__init__()
        self.network = net
        self.body = nn.ModuleDict({l.name: Block(l) for l in net.body})
        head = {l.stage: l for l in net.layers if l.stage in ("final_expand", "feature_mix", "logits")}
        self.head = Head(head["final_expand"], head["feature_mix"], head["logits"])

    def forward(self, x: Tensor) -> Tensor:
        for block in self.body.values():
            x = block(x)
        return self.head(x)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        r = self.network.resolution
        return (1, 3, r, r)


def build_torch(net: Network, seed: int | None = 0, trained_like: bool = True) -> SubnetModel:
    """Build the model in eval mode.

    With ``trained_like`` the weights are Kaiming-initialised and every BatchNorm gets statistics
    recalibrated on random inputs plus random affine parameters, so activations keep a healthy
    scale through the depth of the network, as in a trained model; plain random init makes deep
    nets' logits collapse or explode, which would make quantization checks meaningless.
    """
    if seed is not None:
        torch.manual_seed(seed)
    model = SubnetModel(net)
    if trained_like:
        randomize_trained_like(model, seed)
    return model.eval()


@torch.no_grad()
def randomize_trained_like(model: SubnetModel, seed: int | None = 0, batches: int = 2, batch: int = 8) -> None:
    g = torch.Generator().manual_seed(seed or 0)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", generator=g)
            if m.bias is not None:
                nn.init.normal_(m.bias, 0.0, 0.1, generator=g)
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(1.0 + 0.2 * torch.randn(m.weight.shape, generator=g))
            m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02, generator=g)
            nn.init.zeros_(m.bias)
    # Residual branches end in a small-gain BN (as trained nets and "zero-init residual" do), so the
    # sum of many identity shortcuts does not grow the activation scale without bound.
    for block in model.body.values():
        if block.shortcut != "none" and block.kind != "conv":
            last_bn = [m for name, m in block.named_modules()
                       if isinstance(m, nn.BatchNorm2d) and not name.startswith("downsample")][-1]
            last_bn.weight.mul_(0.25)
    model.train()
    shape = model.input_shape
    for _ in range(batches):
        model(torch.randn((batch, *shape[1:]), generator=g))
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    # both kinds of input an export calibrates with: clipped Gaussian noise (the default) and image-like
    wake = torch.cat([torch.randn((batch, *shape[1:]), generator=g).clamp(-2.5, 2.5),
                      smooth_images(batch, shape[-1], seed=(seed or 0) + 1)])
    _wake_se_squeezes(model, wake)


@torch.no_grad()
def _wake_se_squeezes(model: SubnetModel, x: Tensor) -> None:
    """Shift each SE squeeze's bias so that its ReLU is alive on image-like inputs.

    The squeeze sees the pooled features, which hardly differ between images, so with random weights a channel
    is dead for every input with probability about 1/2, and a whole squeeze (8-40 channels) often enough
    that about 1 random subnet in 80 had one (onnxw-calib-32 on the Zen 4 host). Its INT8 output then has a
    degenerate scale (7.8e-9), the conv's requantization scale becomes 3,462, over XNNPACK's limit of 256, and
    LiteRT refuses to load the whole model ("failed to create XNNPACK runtime"). A trained SE is not dead."""
    squeezes = [m.reduce for m in model.modules() if isinstance(m, SE)]
    if not squeezes:
        return
    pre: list[Tensor] = []
    hooks = [conv.register_forward_hook(lambda _m, _i, out: pre.append(out)) for conv in squeezes]
    model(x)
    for h in hooks:
        h.remove()
    for conv, out in zip(squeezes, pre):
        lo = out.amin(dim=(0, 2, 3))
        spread = out.std().clamp(min=1e-3)
        conv.bias.add_((0.5 * spread - lo).clamp(min=0))  # every channel half a std above zero, on all inputs


def smooth_images(n: int, resolution: int, seed: int = 0, noise: float = 0.3) -> torch.Tensor:
    """Image-like random inputs (low-frequency structure + pixel noise), ImageNet-normalised range."""
    g = torch.Generator().manual_seed(seed)
    lo = torch.randn((n, 3, max(2, resolution // 16), max(2, resolution // 16)), generator=g)
    x = nn.functional.interpolate(lo, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return (x + noise * torch.randn(x.shape, generator=g)).clamp(-2.5, 2.5)


@torch.no_grad()
def imprint_classifier(model: SubnetModel, prototypes: torch.Tensor) -> None:
    """Give the classifier trained-looking margins by weight imprinting (Qi et al., CVPR 2018).

    Class ``i`` gets the centred, normalised penultimate feature of ``prototypes[i]`` as its weight,
    so inputs near a prototype are classified with a real margin. A random classifier has almost
    none, and any numeric noise, INT8 or not, flips its top-1.
    """
    feats = []
    hook = model.head.logits.register_forward_hook(lambda m, i, o: feats.append(i[0]))
    model(prototypes)
    hook.remove()
    f = feats[0]
    mean = f.mean(0, keepdim=True)
    w = nn.functional.normalize(f - mean, dim=1)
    lin = model.head.logits
    lin.weight.zero_()
    lin.bias.fill_(-1e3)  # classes without a prototype never win
    n = min(len(w), lin.out_features)
    scale = 10.0 / (f - mean).norm(dim=1).mean()
    lin.weight[:n] = w[:n] * scale
    lin.bias[:n] = -(w[:n] * scale * mean).sum(1)
