"""``python -m spaces``: inspect hyperspaces, search spaces and subnets.

    python -m spaces describe onnxw
    python -m spaces sample onnxw-151122-023231 --mode random --seed 3 -n 5
    python -m spaces info onnxw-151122-023231 d1#1#2#..._r160 [--kernels] [--json]
"""
from __future__ import annotations

import json
import random
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from . import SearchSpace, SpaceError, get_hyperspace, resolve
from .sampling import sample_subnet

app = typer.Typer(add_completion=False, no_args_is_help=True, help="SpaceEvo hyperspaces, search spaces and subnets.")
err = Console(stderr=True)


def _guard(fn):
    try:
        return fn()
    except SpaceError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2)


@app.command()
def describe(hyperspace: str = typer.Argument(..., help="onnxw (vnni) or mobilew (pixel4)")):
    """Print a hyperspace's blocks, stages, widths and windows as JSON."""
    hs = _guard(lambda: get_hyperspace(hyperspace))
    typer.echo(json.dumps(hs.describe(), indent=2))


@app.command()
def sample(space: str, mode: str = typer.Option("random", "--mode", help="min, max or random"),
           seed: int = typer.Option(0, "--seed"), n: int = typer.Option(1, "-n", min=1)):
    """Print subnet strings sampled from a search space, one per line."""
    sp = _guard(lambda: SearchSpace.parse(space))
    rng = random.Random(seed)
    for _ in range(n):
        typer.echo(_guard(lambda: sample_subnet(sp, mode, rng)).to_string())


@app.command()
def info(space: str, arch: str, kernels: bool = typer.Option(False, "--kernels", help="list the kernels"),
         as_json: bool = typer.Option(False, "--json", help="print the explicit layer JSON")):
    """Validate a subnet against a space and show its layers, FLOPs and parameters."""
    net = _guard(lambda: resolve(space, arch))
    if as_json:
        typer.echo(json.dumps(net.to_json(), indent=2))
        return
    t = Table(title=f"{space}  {net.flops() / 1e6:.1f}M MACs  {net.params() / 1e6:.2f}M params")
    for col in ("layer", "block", "k", "cin", "cout", "e", "s", "hw", "hidden", "se", "shortcut"):
        t.add_column(col)
    for l in net.layers:
        t.add_row(l.name, l.block, str(l.kernel), str(l.cin), str(l.cout), str(l.expand or ""), str(l.stride),
                  f"{l.in_hw}->{l.out_hw}", str(l.hidden or ""), str(l.se_mid or ""), l.shortcut)
    Console().print(t)
    if kernels:
        kt = Table(title="kernels")
        for col in ("layer", "type", "hw", "cin", "cout", "k", "s", "mid", "MACs"):
            kt.add_column(col)
        for k in net.kernels():
            kt.add_row(k.layer, k.type, str(k.hw), str(k.cin), str(k.cout), str(k.kernel), str(k.stride),
                       str(k.mid or ""), f"{k.macs():,}")
        Console().print(kt)


def main(argv: Optional[list[str]] = None) -> None:
    app(argv)


if __name__ == "__main__":
    main()
