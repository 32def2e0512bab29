"""``python -m exporters``: export INT8 (or FP32) ONNX / TFLite models of subnets and single kernels.

Examples::

    python -m exporters onnx   --space onnxw-151122-023231 --sample min --out out/a0.onnx
    python -m exporters tflite --space mobilew-122222-155400 --arch d1#1#2..._r160 --out out/a0.tflite
    python -m exporters kernel --type conv-bn-relu --hw 28 --cin 32 --cout 64 --kernel 3 --format onnx --out k.onnx

Every input is validated before any model is built, so a typo costs milliseconds, not a conversion.
"""
from __future__ import annotations

import json
import os
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from spaces import SearchSpace, SpaceError, network_from_json, resolve
from spaces.sampling import sample_subnet

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Export SpaceEvo subnets and single kernels to INT8 ONNX (onnxruntime) and TFLite (LiteRT).")
console = Console(stderr=True)


class Sample(str, Enum):
    min = "min"
    max = "max"
    random = "random"


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(2)


def _network(space: str, arch: Optional[str], sample: Optional[Sample], seed: int):
    if (arch is None) == (sample is None):
        _fail("give exactly one of --arch SUBNET (or a layer-JSON file) and --sample min|max|random")
    sp = SearchSpace.parse(space)
    if arch is not None and (arch.endswith(".json") or arch.lstrip().startswith("{")):
        text = Path(arch).read_text() if arch.endswith(".json") else arch
        net = network_from_json(text)
        if net.space is None:
            net = resolve(sp, net.subnet())
        return net
    subnet = arch if arch is not None else sample_subnet(sp, sample.value, seed)
    return resolve(sp, subnet)


def _print(res, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(res.model_dump(), indent=2))
        return
    t = Table(show_header=False, box=None)
    t.add_row("wrote", f"[bold]{res.path}[/] ({res.format}, {res.precision})")
    t.add_row("size", f"{res.size_bytes / 1e6:.2f} MB")
    if res.flops is not None:
        t.add_row("FLOPs", f"{res.flops / 1e6:.1f} M multiply-adds, {res.params / 1e6:.2f} M params")
    if res.space:
        t.add_row("space", res.space)
    if res.arch:
        t.add_row("arch", res.arch)
    if res.recipe:
        t.add_row("recipe", res.recipe)
    if res.calibration:
        t.add_row("calibration", res.calibration)
    t.add_row("ops", ", ".join(f"{k} x{v}" for k, v in res.ops.items()))
    t.add_row("time", f"{res.seconds:.1f} s")
    Console().print(t)
    for w in res.warnings:
        Console(stderr=True).print(f"[bold yellow]warning:[/] {w}")


def _export(fmt: str, space: str, arch, sample, seed, fp32, recipe, calib_dir, calib_samples, out, as_json):
    from exporters.calibration import Calibration
    from exporters.recipe import QuantRecipe

    try:
        net = _network(space, arch, sample, seed)
        rec = None if fp32 or fmt == "tflite" else QuantRecipe.parse(recipe)
        if fmt == "tflite" and recipe != "auto":
            _fail("--recipe applies to onnx only (TFLite INT8 is always full-integer, per-channel)")
        r = net.resolution
        calib = None if fp32 else Calibration((1, 3, r, r), calib_samples, seed, calib_dir)
    except (SpaceError, OSError) as e:
        _fail(str(e))
    with console.status(f"exporting {fmt} ({'fp32' if fp32 else 'int8'}) of {net.to_subnet_string()} ..."):
        if fmt == "onnx":
            from exporters.onnx_export import export_onnx

            res = export_onnx(net, out, fp32=fp32, recipe=rec, calibration=calib, seed=seed)
        else:
            from exporters.tflite_export import export_tflite

            res = export_tflite(net, out, fp32=fp32, calibration=calib, seed=seed)
    _print(res, as_json)


_SPACE = typer.Option(..., "--space", help="search space, e.g. onnxw-151122-023231 or mobilew-122222-155400")
_ARCH = typer.Option(None, "--arch", help="subnet string d.._k.._w.._e.._r.. (or a layer-JSON file / text)")
_SAMPLE = typer.Option(None, "--sample", help="sample a subnet of the space instead of --arch")
_SEED = typer.Option(0, "--seed", help="seed for --sample random, the weights and random calibration data")
_FP32 = typer.Option(False, "--fp32", help="export FP32 instead of INT8")
_CDIR = typer.Option(None, "--calib-dir", help="folder of images for calibration (default: random data)")
_CN = typer.Option(16, "--calib-samples", min=1, help="number of calibration samples")
_OUT = typer.Option(..., "--out", help="output file")
_JSON = typer.Option(False, "--json", help="print the result as JSON on stdout")


@app.command()
def onnx(space: str = _SPACE, arch: Optional[str] = _ARCH, sample: Optional[Sample] = _SAMPLE, seed: int = _SEED,
         fp32: bool = _FP32,
         recipe: str = typer.Option("auto", "--recipe",
                                    help="auto (per this CPU) or <qdq|qoperator>-<u8s8|s8s8|u8u8>[-pc][-rr]"),
         calib_dir: Optional[Path] = _CDIR, calib_samples: int = _CN, out: Path = _OUT, as_json: bool = _JSON):
    """ONNX for onnxruntime; INT8 by static quantization with the recipe."""
    _export("onnx", space, arch, sample, seed, fp32, recipe, calib_dir, calib_samples, out, as_json)


@app.command()
def tflite(space: str = _SPACE, arch: Optional[str] = _ARCH, sample: Optional[Sample] = _SAMPLE, seed: int = _SEED,
           fp32: bool = _FP32, calib_dir: Optional[Path] = _CDIR, calib_samples: int = _CN, out: Path = _OUT,
           as_json: bool = _JSON):
    """TFLite for LiteRT; INT8 full-integer with int8 input and output."""
    _export("tflite", space, arch, sample, seed, fp32, "auto", calib_dir, calib_samples, out, as_json)


@app.command()
def kernel(type: str = typer.Option(..., "--type", help="kernel type, e.g. conv-bn-relu, dwconv-bn-relu6, se"),
           hw: int = typer.Option(..., "--hw", help="input height = width"),
           cin: int = typer.Option(..., "--cin"), cout: int = typer.Option(0, "--cout"),
           kernel_size: int = typer.Option(1, "--kernel"), stride: int = typer.Option(1, "--stride"),
           mid: int = typer.Option(0, "--mid", help="SE bottleneck width"),
           fmt: str = typer.Option("onnx", "--format", help="onnx or tflite"), fp32: bool = _FP32,
           recipe: str = typer.Option("auto", "--recipe"), out: Path = _OUT, as_json: bool = _JSON):
    """A single-kernel model, as the profilers measure them."""
    from exporters.kernel_models import KernelConfig, export_kernel
    from exporters.recipe import QuantRecipe

    if fmt not in ("onnx", "tflite"):
        _fail(f"--format: {fmt!r} is not allowed; allowed: onnx, tflite")
    try:
        cfg = KernelConfig(type=type, hw=hw, cin=cin, cout=cout, kernel=kernel_size, stride=stride, mid=mid)
        rec = QuantRecipe.parse(recipe) if fmt == "onnx" and not fp32 else None
    except ValidationError as e:
        _fail("; ".join(f"{'.'.join(map(str, x['loc'])) or 'kernel'}: {x['msg']}" for x in e.errors()))
    except SpaceError as e:
        _fail(str(e))
    _print(export_kernel(cfg, fmt, out, fp32, rec), as_json)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
