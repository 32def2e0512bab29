"""``python -m search`` (console script ``search``): SpaceEvo search-space evolution and subnet search.

    python -m search space --hyperspace onnxw --latency-source lut --constraints 8,10,15,20,25 \\
        --population 500 --sample 125 --spaces 5000 --samples 100000 --top-k 50 --seed 0 --out DIR

Every bad option ends with exit code 2 and a message that names the option and what is allowed.
"""
from __future__ import annotations

import math
import time
from enum import Enum
from pathlib import Path
from typing import NoReturn, Optional

import typer

from spaces import HyperSpace, SpaceError, get_hyperspace
from spaces.hyperspace import HYPERSPACES

from .lut import LutError, load_lut
from .qt_score import LAT_A, LAT_T, P_EPS, REFERENCE_SAMPLES, REFERENCE_TOP_K, LutEvaluator, QTSettings
from .space_evo import EvolutionSettings, SpaceScorer, plot_search, run_space_search, write_results

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="SpaceEvo search: evolve quantization-friendly search spaces (space), search subnets (subnet).")


@app.callback()
def _root() -> None:
    """SpaceEvo search commands."""


class LatencySource(str, Enum):
    lut = "lut"
    service = "service"


def fail(option: str, message: str) -> NoReturn:
    """Exit 2 with ``error: <option>: <message>`` on stderr (plain text: no wrapping, easy to grep)."""
    typer.echo(f"error: {option}: {message}", err=True)
    raise typer.Exit(2)


# --- option parsing --------------------------------------------------------------------------------------
def parse_constraints(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        fail("--constraints", f"{text!r} is not a comma-separated list of latencies in ms, e.g. 8,10,15,20,25")
    if not values:
        fail("--constraints", "no latency given; expected e.g. 8,10,15,20,25 (ms)")
    bad = [v for v in values if not math.isfinite(v) or v <= 0]
    if bad:
        fail("--constraints", f"{bad} are not positive latencies in ms")
    if len(set(values)) != len(values):
        fail("--constraints", f"{text!r} repeats a latency; each constraint counts once")
    return values


def parse_fixed_ms(text: str, resolutions: tuple[int, ...]) -> dict[int, float]:
    """``0.8`` (every resolution) or ``160=0.6,192=0.8,224=1.1`` (each LUT resolution once)."""
    allowed = f"one number of ms >= 0, or {','.join(f'{r}=MS' for r in resolutions)}"
    try:
        if "=" not in text:
            v = float(text)
            out = {r: v for r in resolutions}
        else:
            pairs = [p.split("=") for p in text.split(",") if p.strip()]
            out = {int(r): float(v) for r, v in pairs}
    except ValueError:
        fail("--fixed-ms", f"{text!r}; allowed: {allowed}")
    if sorted(out) != sorted(resolutions) or any(not math.isfinite(v) or v < 0 for v in out.values()):
        fail("--fixed-ms", f"{text!r}; allowed: {allowed}")
    return out


def _hyperspace(name: str) -> HyperSpace:
    try:
        return get_hyperspace(name)
    except SpaceError:
        names = ", ".join(f"{hs.name} (alias {', '.join(hs.aliases)})" for hs in HYPERSPACES.values())
        fail("--hyperspace", f"{name!r} is not a hyperspace; allowed: {names}")


def _check_range(option: str, value: int, lo: int, hi: int | None = None, what: str = "") -> None:
    if value < lo or (hi is not None and value > hi):
        allowed = f">= {lo}" if hi is None else f"{lo}..{hi}"
        fail(option, f"{value} is out of range; allowed: {allowed}{what}")


def _check_constraints(qt: QTSettings, lut, fixed: dict[int, float], where: str, how) -> tuple[float, int]:
    """The smallest latency the hyperspace reaches; constraints below it end with a message that gives it."""
    min_ms, min_res = lut.min_reachable_ms(fixed)
    too_low = [c for c in qt.constraints if c < min_ms]
    if too_low:
        fail("--constraints", f"{', '.join(f'{c:g}' for c in too_low)} ms is below the smallest latency reachable in "
                              f"hyperspace {lut.hyperspace.name} {where}: {min_ms:.3f} ms (resolution {min_res}: "
                              f"{how(min_res)}); choose constraints >= {math.ceil(min_ms * 100) / 100:.2f} ms")
    return min_ms, min_res


# --- latency sources ---------------------------------------------------------------------------------------
def _lut_scorer(hs: HyperSpace, lut_dir: Optional[Path], fixed_ms_text: str, qt: QTSettings,
                seed: int) -> tuple[SpaceScorer, dict]:
    try:
        lut = load_lut(hs, lut_dir)
    except LutError as e:
        fail("--lut-dir", str(e))
    fixed = parse_fixed_ms(fixed_ms_text, lut.resolutions)
    min_ms, min_res = _check_constraints(qt, lut, fixed, "with the LUT latency source", lambda r: (
        f"per stage the fastest LUT row of any candidate, plus the fixed part {fixed[r]:g} ms"))
    source = {
        "latency_source": "lut",
        "lut_dir": str(lut.folder),
        "stage_latency": "pred_int8_ms of the LUT rows (the SpaceEvo paper's predictor on its device)",
        "fixed_part_ms": {str(r): v for r, v in fixed.items()},
        "fixed_part_note": ("first_conv, stage0 and head are not in the LUT; their latency is the assumed constant "
                            "fixed_part_ms per resolution (--fixed-ms), added to every sampled subnet, not measured"),
        "min_reachable_ms": {"ms": min_ms, "resolution": min_res},
        "resolutions": list(lut.resolutions),
    }
    return LutEvaluator(lut, qt, fixed, seed), source


def _service_scorer(hs: HyperSpace, service: Optional[str], device: Optional[str], lut_dir: Optional[Path],
                    qt: QTSettings, seed: int) -> tuple[SpaceScorer, dict]:
    """The LUT's subnets with their latencies re-predicted on ``device`` by the service (search/service_latency.py:
    once per device and predictor version, cached), fixed parts from the same service, not assumed."""
    from .client import LatencyClient, ServiceError
    from .service_latency import service_lut

    if not device:
        fail("--device", "missing; --latency-source service needs a device name (see GET /devices on the service)")
    try:
        lut = load_lut(hs, lut_dir)
    except LutError as e:
        fail("--lut-dir", str(e))
    try:
        with LatencyClient(service) as client:
            lut, fixed, source = service_lut(lut, client, device, progress=lambda m: typer.echo(m, err=True))
    except ServiceError as e:
        typer.echo(f"error: --service: {e}", err=True)
        raise typer.Exit(2)
    min_ms, min_res = _check_constraints(qt, lut, fixed, f"on {device}", lambda r: (
        "the fastest LUT row of each stage with the fixed parts, as the service predicts them"))
    source.update({"lut_dir": str(lut.folder), "min_reachable_ms": {"ms": min_ms, "resolution": min_res},
                   "resolutions": list(lut.resolutions)})
    return LutEvaluator(lut, qt, fixed, seed), source


def _make_scorer(source: LatencySource, hs: HyperSpace, lut_dir: Optional[Path], fixed_ms: str,
                 service: Optional[str], qt: QTSettings, seed: int, device: Optional[str] = None
                 ) -> tuple[SpaceScorer, dict]:
    if source is LatencySource.lut:
        return _lut_scorer(hs, lut_dir, fixed_ms, qt, seed)
    return _service_scorer(hs, service, device, lut_dir, qt, seed)


# --- commands ----------------------------------------------------------------------------------------------
@app.command()
def space(
    hyperspace: str = typer.Option("onnxw", "--hyperspace", help="onnxw (alias vnni) or mobilew (alias pixel4)"),
    latency_source: LatencySource = typer.Option(LatencySource.lut, "--latency-source",
                                                 help="lut: LUT stage latencies + --fixed-ms; service: HTTP"),
    constraints: str = typer.Option("8,10,15,20,25", "--constraints", help="INT8 latency constraints in ms"),
    population: int = typer.Option(500, "--population", help="P, population size"),
    sample: int = typer.Option(125, "--sample", help="S, members sampled to pick a parent"),
    spaces: int = typer.Option(5000, "--spaces", help="N, distinct spaces evaluated (population included)"),
    samples: int = typer.Option(REFERENCE_SAMPLES, "--samples", help="subnets sampled per space (paper: 5000)"),
    top_k: int = typer.Option(REFERENCE_TOP_K, "--top-k", help="top-tier subnets per constraint (paper: 20)"),
    seed: int = typer.Option(0, "--seed", help="seed of every random choice"),
    out: Path = typer.Option(Path("space_search_out"), "--out", help="output folder (JSON and PNG)"),
    lut_dir: Optional[Path] = typer.Option(None, "--lut-dir", help="LUT root (with onnxw/, mobilew/) or the "
                                           "hyperspace's folder; default $HIL_SHARED_DATA/spaceevo_block_lut"),
    fixed_ms: str = typer.Option("0", "--fixed-ms", help="lut source: latency of first_conv+stage0+head, "
                                 "one number or 160=MS,192=MS,224=MS (default 0: not in the LUT)"),
    lat_t: float = typer.Option(LAT_T, "--lat-t", help="latency penalty t in max(1, (t/p)^a)"),
    lat_a: float = typer.Option(LAT_A, "--lat-a", help="latency penalty a in max(1, (t/p)^a)"),
    random_baseline: bool = typer.Option(True, "--random-baseline/--no-random-baseline",
                                         help="also run random search with the same budget (Fig. 11)"),
    service: Optional[str] = typer.Option(None, "--service", envvar="HIL_SERVICE_URL",
                                          help="latency service URL (--latency-source service; env HIL_SERVICE_URL)"),
    device: Optional[str] = typer.Option(None, "--device", help="--latency-source service: device name on the "
                                         "service (GET /devices)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
) -> None:
    """Evolve a search space by Q-T score (SpaceEvo Algorithm 1) and compare with random search."""
    hs = _hyperspace(hyperspace)
    cons = parse_constraints(constraints)
    _check_range("--population", population, 2)
    _check_range("--sample", sample, 1, population, " (at most --population)")
    _check_range("--spaces", spaces, population, None, " (at least --population)")
    _check_range("--samples", samples, 1)
    _check_range("--top-k", top_k, 1, samples, " (at most --samples)")
    _check_range("--seed", seed, 0)
    if not (math.isfinite(lat_t) and lat_t > 0):
        fail("--lat-t", f"{lat_t}; allowed: a number > 0")
    if not (math.isfinite(lat_a) and lat_a >= 0):
        fail("--lat-a", f"{lat_a}; allowed: a number >= 0")
    if out.exists() and not out.is_dir():
        fail("--out", f"{out} is a file; allowed: a folder (created if missing)")
    qt = QTSettings(cons, samples, top_k, lat_t, lat_a)
    scorer, source = _make_scorer(latency_source, hs, lut_dir, fixed_ms, service, qt, seed, device)
    evo = EvolutionSettings(population, sample, spaces, seed)

    if latency_source is LatencySource.service:
        typer.echo(f"latency source: service {source['service']}, device {source['device']}, predictor "
                   f"v{source['predictor']['version']}; per-model fixed part "
                   f"{', '.join(f'{v:g} ms @{r}' for r, v in source['fixed_part_ms'].items())} (front and head are "
                   f"in the stage-1 and stage-6 rows); smallest reachable {source['min_reachable_ms']['ms']:.3f} ms",
                   err=True)
    if latency_source is LatencySource.lut:
        fx = source["fixed_part_ms"]
        typer.echo(f"latency source: lut ({source['lut_dir']}); fixed part (first_conv+stage0+head) assumed "
                   f"{', '.join(f'{v:g} ms @{r}' for r, v in fx.items())}; smallest reachable "
                   f"{source['min_reachable_ms']['ms']:.3f} ms", err=True)
    t0 = time.perf_counter()
    result = run_space_search(hs, scorer, evo, random_baseline, progress)
    payload = {
        "command": "space",
        "settings": {"hyperspace": hs.name, "latency_source": latency_source.value, "device": device,
                     "constraints": list(cons),
                     "population": population, "sample": sample, "spaces": spaces, "samples": samples,
                     "top_k": top_k, "lat_t": lat_t, "lat_a": lat_a, "p_eps": P_EPS, "seed": seed,
                     "random_baseline": random_baseline, "snapshot_every": evo.snapshot_every},
        "source": source,
        "score_definition": ("Q-T = sum over constraints T of 1 / (mean NSR loss of the top_k lowest-loss sampled "
                             "subnets with latency <= T * max(1, (lat_t / p) ** lat_a)), p = share of samples "
                             "with latency <= T + p_eps; 0 for a constraint no sample meets (SpaceEvo reference)"),
        **result,
    }
    payload["timing"]["total_s"] = round(time.perf_counter() - t0, 3)
    json_path = write_results(out, payload)
    png_path = plot_search(payload, out / "space_search.png")
    best = payload["evolution"]["best"]
    typer.echo(f"best space (evolution): {best['space']}  Q-T {best['score']:.5f}")
    for c in best["per_constraint"]:
        top = "-" if c["mean_top_loss"] is None else f"{c['mean_top_loss']:.4f}"
        typer.echo(f"  T={c['constraint_ms']:g} ms: {c['n_under']} of {samples} samples under, penalty "
                   f"{c['penalty']:.4f}, mean top-{top_k} loss {top}, score {c['score']:.5f}")
    if payload["random"]:
        typer.echo(f"best space (random):    {payload['random']['best']['space']}  Q-T "
                   f"{payload['random']['best']['score']:.5f}")
    typer.echo(f"wrote {json_path} and {png_path} in {payload['timing']['total_s']:.1f} s")


@app.command()
def subnet(
    space: str = typer.Option(..., "--space", help="search space, e.g. onnxw-151122-023231"),
    device: str = typer.Option(..., "--device", help="device name on the service (GET /devices)"),
    constraints: str = typer.Option("8,10,15,20,25", "--constraints", help="INT8 latency constraints in ms"),
    accuracy: str = typer.Option("lut", "--accuracy", help="lut (block-wise KD table) or module:function "
                                 "(function(space, subnets) -> accuracies, higher is better)"),
    population: int = typer.Option(100, "--population"),
    iterations: int = typer.Option(100, "--iterations", help="generations per constraint"),
    parent_ratio: float = typer.Option(0.25, "--parent-ratio"),
    mutation_ratio: float = typer.Option(0.5, "--mutation-ratio"),
    mutate_prob: float = typer.Option(0.1, "--mutate-prob"),
    seed: int = typer.Option(0, "--seed"),
    margin: float = typer.Option(0.0, "--margin", help="search under T x (1 - margin): headroom for the predictor's "
                                 "error, so the measured model still meets T (e.g. 0.1)"),
    out: Path = typer.Option(Path("subnet_search_out"), "--out", help="output folder (JSON and PNG)"),
    lut_dir: Optional[Path] = typer.Option(None, "--lut-dir", help="LUT root or the hyperspace's folder"),
    export: Optional[str] = typer.Option(None, "--export", help="onnx or tflite: write the chosen INT8 models to "
                                         "--out/models"),
    measure: bool = typer.Option(False, "--measure/--no-measure", help="with --export: measure each exported "
                                 "model on the device through the service's job queue (an agent must serve it)"),
    service: Optional[str] = typer.Option(None, "--service", envvar="HIL_SERVICE_URL", help="latency service URL"),
    token: Optional[str] = typer.Option(None, "--token", envvar="HIL_TOKEN", help="client token (for --measure)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Evolutionary subnet search in one space for each latency constraint; Pareto front as JSON and PNG."""
    from spaces import SearchSpace, SpaceError

    from .client import LatencyClient, ServiceError
    from .subnet import LutGenome, StringGenome, SubnetSettings, evolve, load_callable, plot_front

    try:
        sp = SearchSpace.parse(space)
    except SpaceError as e:
        fail("--space", str(e))
    cons = parse_constraints(constraints)
    _check_range("--population", population, 4)
    _check_range("--iterations", iterations, 1)
    _check_range("--seed", seed, 0)
    for name, v in (("--parent-ratio", parent_ratio), ("--mutation-ratio", mutation_ratio),
                    ("--mutate-prob", mutate_prob)):
        if not 0 < v <= 1:
            fail(name, f"{v}; allowed: a number in (0, 1]")
    if not 0 <= margin < 1:
        fail("--margin", f"{margin}; allowed: a number in [0, 1)")
    if export not in (None, "onnx", "tflite"):
        fail("--export", f"{export!r}; allowed: onnx, tflite")
    if measure and not export:
        fail("--measure", "needs --export onnx|tflite")
    if accuracy == "lut":
        try:
            genome = LutGenome(load_lut(sp.hyperspace, lut_dir), sp)
        except LutError as e:
            fail("--lut-dir", str(e))
        acc_fn, label = (lambda gs: [1.0 / genome.loss(g) for g in gs]), "accuracy proxy: 1 / sum of stage NSR losses"
    else:
        try:
            user = load_callable(accuracy)
        except ValueError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2)
        genome = StringGenome(sp)
        acc_fn, label = (lambda gs: list(user(space, list(gs)))), f"accuracy ({accuracy})"
    targets = tuple(c * (1 - margin) for c in cons)
    settings = SubnetSettings(targets, population, iterations, parent_ratio, mutation_ratio, mutate_prob, seed)
    client = LatencyClient(service, token=token)
    try:
        info = client.device(device)
        smallest = client.predict(device, space, [str(sample_subnet_min(sp))])[0]
        low = [c for c, t in zip(cons, targets) if t < smallest]
        if low:
            fail("--constraints", f"{', '.join(f'{c:g}' for c in low)} ms is below the smallest subnet of {space} on "
                                  f"{device}: {smallest:.3f} ms (its min subnet); choose constraints >= "
                                  f"{math.ceil(smallest * 100) / 100:.2f} ms")
        from rich.progress import Progress

        with Progress(transient=True, disable=not progress) as bar:
            task = bar.add_task("subnet search", total=len(cons) * iterations)

            def step(c, it, best):
                bar.update(task, advance=1, description=f"T={c:g} ms: best {best:.4f}")
            res = evolve(sp, genome, lambda ss: client.predict(device, space, ss), acc_fn, settings, step)
        for r_, c in zip(res["per_constraint"], cons):  # report against the constraint asked for
            r_["search_target_ms"], r_["constraint_ms"] = r_["constraint_ms"], c
    except ServiceError as e:
        typer.echo(f"error: --service: {e}", err=True)
        raise typer.Exit(2)
    payload = {"command": "subnet",
               "settings": {"space": space, "device": device, "constraints": list(cons), "accuracy": accuracy,
                            "accuracy_label": label, "margin": margin, "population": population, "iterations": iterations,
                            "parent_ratio": parent_ratio, "mutation_ratio": mutation_ratio,
                            "mutate_prob": mutate_prob, "seed": seed, "service": client.url},
               "predictor": {k: info["predictor"].get(k) for k in ("version", "trained_at", "backend", "accuracy")},
               "smallest_subnet_ms": smallest, **res}
    out.mkdir(parents=True, exist_ok=True)
    if export:
        payload["exported"] = _export(payload, sp, export, out / "models", client if measure else None, device)
    import json

    (out / "subnet_search.json").write_text(json.dumps(payload, indent=1))
    plot_front(payload, out / "subnet_search.png")
    for c in payload["per_constraint"]:
        b = c["best"]
        typer.echo(f"T={c['constraint_ms']:g} ms: " + (f"{b['latency_ms']:.3f} ms, {label.split(':')[0]} "
                                                       f"{b['accuracy']:.4f}  {b['subnet']}" if b else c["note"]))
    for e in payload.get("exported", []):
        m = f", measured {e['measured_ms']:.3f} ms ({'within' if e['measured_ms'] <= e['constraint_ms'] else 'OVER'} " \
            f"the constraint)" if e.get("measured_ms") is not None else ""
        typer.echo(f"  {e['path']}: predicted {e['predicted_ms']:.3f} ms{m}")
    typer.echo(f"wrote {out / 'subnet_search.json'} and {out / 'subnet_search.png'}")


def sample_subnet_min(space):
    from spaces.sampling import sample_subnet

    return sample_subnet(space, "min")


def _export(payload: dict, space, fmt: str, folder: Path, client, device: str) -> list[dict]:
    """Export each constraint's best subnet to INT8 (and measure it on the device when a client is given)."""
    from spaces import resolve

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for c in payload["per_constraint"]:
        b = c["best"]
        if not b:
            continue
        net = resolve(space, b["subnet"])
        path = folder / f"T{c['constraint_ms']:g}ms.int8.{fmt}"
        if fmt == "onnx":
            from exporters.onnx_export import export_onnx

            export_onnx(net, path)
        else:
            from exporters.tflite_export import export_tflite

            export_tflite(net, path)
        row = {"constraint_ms": c["constraint_ms"], "path": str(path), "subnet": b["subnet"],
               "predicted_ms": b["latency_ms"]}
        if client is not None:
            job = client.measure(device, path.read_bytes(), fmt)
            row.update(measured_ms=job["result"]["latency_ms"], stable=job["result"]["stable"], job=job["id"])
        out.append(row)
    return out


def main() -> None:
    app()


if __name__ == "__main__":
    main()
