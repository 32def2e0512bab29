"""Keras builder: the same graph as :mod:`exporters.torch_builder`, in NHWC, for the TFLite path.

Every Keras layer is named after the torch module it mirrors (``body.stage1_0.dw.conv`` becomes
``body_stage1_0_dw_conv``), which is what :func:`copy_weights` relies on. Strided convs use an
explicit symmetric ``ZeroPadding2D(k//2)`` + ``valid`` conv: TF's ``same`` padding pads
bottom/right only for stride 2, which would shift the sampling grid against torch and break the
"same graph, same weights" contract. Stride-1 convs use ``same`` (identical for odd kernels).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from spaces import Layer, Network

if TYPE_CHECKING:  # pragma: no cover
    import keras
    from torch import nn

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

_ACTS = {"relu": "relu", "relu6": "relu6", "hswish": "hard_swish", "swish": "silu"}
BN_EPS = 1e-5  # torch's default; Keras defaults to 1e-3


def _name(path: str) -> str:
    return path.replace(".", "_")


def _conv_bn_act(x, path: str, cout: int, k: int, stride: int = 1, depthwise: bool = False, act: str = "none",
                 bn: bool = True):
    from keras import layers

    pad = "same"
    if stride > 1 and k > 1:
        x = layers.ZeroPadding2D(k // 2, name=_name(path + ".pad"))(x)
        pad = "valid"
    if depthwise:
        x = layers.DepthwiseConv2D(k, stride, padding=pad, use_bias=not bn, name=_name(path + ".conv"))(x)
    else:
        x = layers.Conv2D(cout, k, stride, padding=pad, use_bias=not bn, name=_name(path + ".conv"))(x)
    if bn:
        x = layers.BatchNormalization(epsilon=BN_EPS, name=_name(path + ".bn"))(x)
    if act != "none":
        x = layers.Activation(_ACTS[act], name=_name(path + ".act"))(x)
    return x


def _se(x, path: str, channels: int, mid: int):
    from keras import layers

    y = layers.GlobalAveragePooling2D(keepdims=True, name=_name(path + ".pool"))(x)
    y = layers.Conv2D(mid, 1, use_bias=True, name=_name(path + ".reduce"))(y)
    y = layers.ReLU(name=_name(path + ".relu"))(y)
    y = layers.Conv2D(channels, 1, use_bias=True, name=_name(path + ".expand"))(y)
    y = layers.Activation("hard_sigmoid", name=_name(path + ".gate"))(y)
    return layers.Multiply(name=_name(path + ".scale"))([x, y])


def _block(x, l: Layer):
    from keras import layers

    p, act = f"body.{l.name}", l.activation
    if l.kind == "conv":
        return _conv_bn_act(x, p + ".conv", l.cout, l.kernel, l.stride, act=act)
    inp = x
    if l.kind == "mbv1":
        x = _conv_bn_act(x, p + ".dw1", l.cin, l.kernel, l.stride, depthwise=True, act=act)
        x = _conv_bn_act(x, p + ".pw1", l.cout, 1, act=act)
        x = _conv_bn_act(x, p + ".dw2", l.cout, l.kernel, 1, depthwise=True, act=act)
        x = _conv_bn_act(x, p + ".pw2", l.cout, 1, act=act)
    elif l.kind == "mb":
        if l.hidden != l.cin:
            x = _conv_bn_act(x, p + ".expand", l.hidden, 1, act=act)
        if l.k3_stack:
            steps = (l.kernel - 1) // 2
            for i in range(steps):
                last = i == steps - 1
                x = _conv_bn_act(x, f"{p}.dw.{i}", l.hidden, 3, l.stride if i == 0 else 1, depthwise=True,
                                 act=act if last else "none", bn=last)
        else:
            x = _conv_bn_act(x, p + ".dw", l.hidden, l.kernel, l.stride, depthwise=True, act=act)
        if l.se_mid:
            x = _se(x, p + ".se", l.hidden, l.se_mid)
        x = _conv_bn_act(x, p + ".project", l.cout, 1)
    elif l.kind == "res":
        x = _conv_bn_act(x, p + ".conv1", l.hidden, 1, act=act)
        x = _conv_bn_act(x, p + ".conv2", l.hidden, l.kernel, l.stride, act=act)
        if l.se_mid:
            x = _se(x, p + ".se", l.hidden, l.se_mid)
        x = _conv_bn_act(x, p + ".conv3", l.cout, 1)
    elif l.kind == "fused":
        x = _conv_bn_act(x, p + ".fused", l.hidden, l.kernel, l.stride, act=act)
        if l.se_mid:
            x = _se(x, p + ".se", l.hidden, l.se_mid)
        x = _conv_bn_act(x, p + ".project", l.cout, 1)
    if l.shortcut == "none":
        return x
    sc = _conv_bn_act(inp, p + ".downsample", l.cout, 1, l.stride) if l.shortcut == "conv" else inp
    x = layers.Add(name=_name(p + ".add"))([x, sc])
    if l.act_after_add:
        x = layers.Activation(_ACTS[act], name=_name(p + ".post_act"))(x)
    return x


def build_keras(net: Network) -> "keras.Model":
    """Build the Keras twin of ``net`` (batch 1, NHWC input ``resolution x resolution x 3``)."""
    import keras
    from keras import layers

    r = net.resolution
    inp = keras.Input((r, r, 3), batch_size=1, name="input")
    x = inp
    for l in net.body:
        x = _block(x, l)
    head = {l.stage: l for l in net.layers}
    fe, fm, lg = head["final_expand"], head["feature_mix"], head["logits"]
    x = _conv_bn_act(x, "head.final_expand", fe.cout, 1, act=fe.activation)
    x = layers.GlobalAveragePooling2D(keepdims=True, name="head_pool")(x)
    x = _conv_bn_act(x, "head.feature_mix", fm.cout, 1, act=fm.activation)
    x = layers.Flatten(name="head_flatten")(x)
    x = layers.Dense(lg.cout, name="head_logits")(x)
    return keras.Model(inp, x, name="subnet")


def copy_weights(torch_model: "nn.Module", keras_model: "keras.Model") -> int:
    """Copy every conv / BN / linear weight from the torch model into its Keras twin.

    Returns the number of layers copied; raises if any torch layer has no twin or shapes differ,
    so a builder drift is caught at once rather than as a silent accuracy loss.
    """
    from torch import nn

    by_name = {l.name: l for l in keras_model.layers}
    copied = 0
    for path, m in torch_model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            kname = _name(path)
            if kname not in by_name:
                raise KeyError(f"no Keras layer {kname!r} for torch module {path!r}")
            kl = by_name[kname]
            if isinstance(m, nn.Conv2d):
                w = m.weight.detach().cpu().numpy()
                w = w.transpose(2, 3, 0, 1) if m.groups > 1 else w.transpose(2, 3, 1, 0)
                vals = [w] + ([m.bias.detach().cpu().numpy()] if m.bias is not None else [])
            elif isinstance(m, nn.BatchNorm2d):
                vals = [t.detach().cpu().numpy() for t in (m.weight, m.bias, m.running_mean, m.running_var)]
            else:
                vals = [m.weight.detach().cpu().numpy().T, m.bias.detach().cpu().numpy()]
            expected = [tuple(v.shape) for v in kl.get_weights()]
            if expected != [v.shape for v in vals]:
                raise ValueError(f"shape mismatch for {path}: torch {[v.shape for v in vals]} vs keras {expected}")
            kl.set_weights([np.ascontiguousarray(v, dtype=np.float32) for v in vals])
            copied += 1
    return copied


def build_keras_from_torch(torch_model, net: Network):
    km = build_keras(net)
    copy_weights(torch_model, km)
    return km
