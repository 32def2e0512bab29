"""Tiny single-kernel models (one conv-bn-relu, one dwconv, one SE, ...) for kernel profiling.

Each model is built from a :class:`~exporters.kernel_config.KernelConfig` (the boundary format shared with
profilers and predictors, re-exported here) and exported like a subnet, so the kernels of any subnet can be
profiled one by one.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .kernel_config import KernelConfig  # also imported from here by the callers that build and export kernels
from .result import ExportResult
from .torch_builder import SE, ConvBNAct, make_act


class _Add(nn.Module):
    def __init__(self, act: str):
        super().__init__()
        self.act = make_act(act)

    def forward(self, a, b):
        return self.act(a + b)


class _Concat(nn.Module):
    def forward(self, a, b):
        return torch.cat([a, b], 1)


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def build_kernel_torch(cfg: KernelConfig) -> nn.Module:
    op, act, k, s = cfg.op, cfg.activation, cfg.kernel, cfg.stride
    if op == "conv":
        m: nn.Module = ConvBNAct(cfg.cin, cfg.cout, k, s, act=act)
    elif op == "dwconv":
        m = ConvBNAct(cfg.cin, cfg.cin, k, s, groups=cfg.cin, act=act, bn="-bn" in cfg.type)
    elif op == "se":
        m = SE(cfg.cin, cfg.mid)
    elif op == "add":
        m = _Add(act)
    elif op == "global":
        m = _Lambda(lambda x: nn.functional.adaptive_avg_pool2d(x, 1))  # GlobalAveragePool, as in the networks
    elif op == "fc":
        m = nn.Linear(cfg.cin, cfg.cout)
    elif op == "act":
        m = nn.Hardsigmoid() if act == "hsigmoid" else make_act(act)
    elif op == "maxpool":
        m = nn.MaxPool2d(k, s, k // 2)
    elif op == "avgpool":
        m = nn.AvgPool2d(k, s, k // 2, count_include_pad=False)
    elif op == "concat":
        m = _Concat()
    else:  # pragma: no cover - guarded by the validator
        raise AssertionError(cfg.type)
    return m.eval()


def build_kernel_keras(cfg: KernelConfig):
    """The Keras twin of :func:`build_kernel_torch` (NHWC; strided convs padded like torch)."""
    import keras
    from keras import layers

    from .keras_builder import _ACTS, _conv_bn_act, _se

    shapes = cfg.input_shapes()
    ins = [keras.Input(s[1:] if len(s) == 2 else (s[2], s[3], s[1]), batch_size=1, name=f"input_{i}")
           for i, s in enumerate(shapes)]
    x = ins[0]
    op, act, k, s = cfg.op, cfg.activation, cfg.kernel, cfg.stride
    if op == "conv":
        y = _conv_bn_act(x, "k", cfg.cout, k, s, act=act)
    elif op == "dwconv":
        y = _conv_bn_act(x, "k", cfg.cin, k, s, depthwise=True, act=act, bn="-bn" in cfg.type)
    elif op == "se":
        y = _se(x, "k", cfg.cin, cfg.mid)
    elif op == "add":
        y = layers.Add()(ins)
        if act != "none":
            y = layers.Activation(_ACTS[act])(y)
    elif op == "global":
        y = layers.GlobalAveragePooling2D(keepdims=True)(x)
    elif op == "fc":
        y = layers.Dense(cfg.cout)(x)
    elif op == "act":
        y = layers.Activation("hard_sigmoid" if act == "hsigmoid" else _ACTS[act])(x)
    elif op in ("maxpool", "avgpool"):
        pool = layers.MaxPooling2D if op == "maxpool" else layers.AveragePooling2D
        y = pool(k, s, padding="same")(x)
    elif op == "concat":
        y = layers.Concatenate(axis=-1)(ins)
    else:  # pragma: no cover
        raise AssertionError(cfg.type)
    return keras.Model(ins, y)


def export_kernel(cfg: KernelConfig, fmt: str, out: str | Path, fp32: bool = False, recipe=None) -> ExportResult:
    """Export one kernel model to ``onnx`` or ``tflite`` (INT8 unless ``fp32``)."""
    if fmt == "onnx":
        from .onnx_export import export_onnx_model

        return export_onnx_model(build_kernel_torch(cfg), cfg.input_shapes(), out, fp32, recipe)
    if fmt == "tflite":
        from .tflite_export import export_tflite_model, release_keras

        km = build_kernel_keras(cfg)
        try:
            return export_tflite_model(km, out, fp32)
        finally:
            release_keras()
    raise ValueError(f"format: {fmt!r} is not allowed; allowed: onnx, tflite")
