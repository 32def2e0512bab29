"""``python -m predictors``: train, inspect and evaluate INT8 kernel-latency predictors.

A predictor is named by a directory, by ``<device>/<backend>`` (bundled, see predictors.bundled) or by
``local:<backend>`` (this host's bundled one). Defaults put a host's data and predictor where the
service finds them: ``data/kernels/<device>/<backend>`` and ``predictors/bundled/<device>/<backend>``.

    python -m predictors train --backend onnxruntime-cpu                  # this host, bundled location
    python -m predictors train-adaptive --backend onnxruntime-cpu
    python -m predictors info local:onnxruntime-cpu
    python -m predictors predict local:onnxruntime-cpu --space onnxw-151122-023231 --arch d1#..._r160
    python -m predictors predict-model local:onnxruntime-cpu model.onnx   (or .tflite)
    python -m predictors eval local:onnxruntime-cpu --backend onnxruntime-cpu --n 300 --out docs/eval/<device>/onnxruntime-cpu
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="INT8 kernel-latency predictors.")
err = Console(stderr=True, soft_wrap=True)  # errors stay one greppable line


def _defaults(backend: str, data: Optional[Path], device: Optional[str], out: Optional[Path]):
    from .bundled import bundled_path, local_device

    device = device or local_device(backend)
    data = data or Path("data/kernels") / device / backend
    return data, device, out or bundled_path(device, backend)


def _load(spec: str):
    from .bundled import load_predictor

    try:
        return load_predictor(spec)
    except (FileNotFoundError, LookupError, ValueError) as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2)


_TRAIN_BACKEND = typer.Option("onnxruntime-cpu", "--backend", help="onnxruntime-cpu or tflite-cpu")
_DATA = typer.Option(None, "--data", help="collection folder (measurements.jsonl) or the file "
                     "[default: data/kernels/<device>/<backend>]")
_DEVICE = typer.Option(None, "--device", help="device name stored in the predictor [default: this host's]")
_OUT = typer.Option(None, "--out", help="predictor directory [default: predictors/bundled/<device>/<backend>]")


@app.command()
def train(backend: str = _TRAIN_BACKEND, data: Optional[Path] = _DATA, device: Optional[str] = _DEVICE,
          out: Optional[Path] = _OUT,
          include_unstable: bool = typer.Option(False, "--include-unstable", help="also train on stable=false records"),
          min_records: int = typer.Option(10, "--min-records"),
          statistic: str = typer.Option("p10", "--statistic", help="what a record's latency is: p10, min, median or mean")):
    """Train one forest per kernel type (small per-kernel search) and save a pickle-free predictor."""
    from .train import STATISTICS, train as run

    data, device, out = _defaults(backend, data, device, out)
    path = data / "measurements.jsonl" if data.is_dir() else data
    if not path.is_file():
        err.print(f"[bold red]error:[/] --data: {data} has no measurements.jsonl; collect first: "
                  f"python -m profilers collect --backend {backend} --out {data}")
        raise typer.Exit(2)
    t = Table("kernel", "records", "target", "RMSPE", "+-10%", title=f"held-out kernel error ({device})")
    if statistic not in STATISTICS:
        err.print(f"[bold red]error:[/] --statistic: {statistic!r} is not allowed; allowed: {', '.join(STATISTICS)}")
        raise typer.Exit(2)
    pred = run(path, device, stable_only=not include_unstable, min_records=min_records, statistic=statistic,
               progress=lambda k, info: t.add_row(k, str(info.metrics["n"] + info.metrics["n_train"]), info.target,
                                                  f"{info.metrics['rmspe']:.3f}", f"{info.metrics['acc10']:.0%}"))
    if pred.meta.backend != backend:
        err.print(f"[bold red]error:[/] {path} holds {pred.meta.backend} measurements, not {backend}")
        raise typer.Exit(2)
    pred.save(out)
    Console().print(t)
    err.print(f"wrote {out}")


@app.command("train-adaptive")
def train_adaptive(backend: str = _TRAIN_BACKEND, data: Optional[Path] = _DATA, device: Optional[str] = _DEVICE,
                   out: Optional[Path] = _OUT, rounds: int = typer.Option(5, "--rounds", min=1),
                   round_min: float = typer.Option(10.0, "--round-min", help="measuring budget per round (minutes)"),
                   refine_top: int = typer.Option(100, "--refine-top")):
    """Train, refine around the worst-predicted kernels, retrain, until held-out error stops improving."""
    from .adaptive import adaptive_train

    data, device, out = _defaults(backend, data, device, out)

    def cb(r, err_, n):
        err.print(f"round {r}: held-out kernel RMSPE {err_:.3f}" + (f" (after {n} refine seeds)" if n else ""))

    pred, hist = adaptive_train(backend, data, device, rounds, refine_top, round_min * 60, progress=cb)
    pred.save(out)
    err.print(f"RMSPE by round: {', '.join(f'{h:.3f}' for h in hist)}; wrote {out}")


@app.command()
def worst(predictor: str, data: Path = typer.Option(..., "--data", help="the predictor's training collection"),
          out: Path = typer.Option(..., "--out", help="JSONL of KernelConfigs for `profilers collect --refine`"),
          threshold: float = typer.Option(0.10, "--threshold", help="relative out-of-fold error to count as bad"),
          top: int = typer.Option(200, "--top")):
    """Badly predicted kernel configs (out-of-fold), worst first: the seeds of the adaptive sampler."""
    from .artifact import Predictor
    from .train import worst_configs

    path = data / "measurements.jsonl" if data.is_dir() else data
    bad = worst_configs(path, _load(predictor), threshold)[:top]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(c.model_dump_json() + "\n" for _, c in bad))
    err.print(f"{len(bad)} configs above {threshold:.0%} error -> {out}; next: python -m profilers collect "
              f"--refine {out} ...")


@app.command()
def ranges(predictor: Path = typer.Argument(..., help="a predictor directory (it is rewritten in place)"),
           data: Optional[Path] = typer.Option(None, "--data", help="its training collection [default: the path in "
                                               "its metadata]")):
    """Record each forest's training range in a predictor trained before ranges were kept (its forests and
    predictions are unchanged): graph predictions then flag kernels outside them as extrapolated."""
    from .artifact import Predictor
    from .train import record_ranges

    if not (predictor / "metadata.json").is_file():
        err.print(f"[bold red]error:[/] {predictor}: not a predictor directory (no metadata.json)")
        raise typer.Exit(2)
    p = Predictor.load(predictor)
    path = None if data is None else (data / "measurements.jsonl" if data.is_dir() else data)
    try:
        p = record_ranges(p, path)
    except ValueError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2)
    (predictor / "metadata.json").write_text(p.meta.model_dump_json(indent=1))  # forests.npz stays byte for byte
    err.print(f"{predictor}: training ranges of {len(p.meta.kernels)} forests recorded")


@app.command()
def info(predictor: str):
    """Print a predictor's metadata."""
    typer.echo(_load(predictor).meta.model_dump_json(indent=1))


@app.command()
def predict(predictor: str, space: str = typer.Option(..., "--space"), arch: str = typer.Option(..., "--arch"),
            detail: bool = typer.Option(False, "--detail", help="per-kernel latencies")):
    """Predict one subnet (sum of its kernels); unknown kernel types are reported, not counted as 0."""
    from exporters.kernel_config import KernelConfig
    from spaces import SpaceError, resolve

    from .artifact import predict_kernel_list

    try:
        net = resolve(space, arch)
    except SpaceError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2)
    p = _load(predictor)
    ks = net.kernels()
    res = predict_kernel_list(p, [KernelConfig.from_kernel(k) for k in ks])
    doc = {"device": p.meta.device, "latency_ms": res.latency_ms, "overhead_ms": p.meta.overhead_ms,
           "unknown_kernels": res.unknown_kernels}
    if detail:
        doc["kernels"] = [{**k.to_dict(), "latency_ms": r["latency_ms"]} for k, r in zip(ks, res.kernels)]
    typer.echo(json.dumps(doc, indent=1))
    if res.latency_ms is None:
        raise typer.Exit(1)


@app.command("predict-model")
def predict_model_cmd(predictor: str, model: Path):
    """Predict any ONNX or TFLite model by detecting its kernels; unsupported ops are listed, never counted as 0."""
    from .artifact import predict_model

    if not model.is_file():
        err.print(f"[bold red]error:[/] model file not found: {model}")
        raise typer.Exit(2)
    p = _load(predictor)
    try:
        res = predict_model(p, model)
    except Exception as e:  # onnx / flatbuffers raise their own decode errors
        err.print(f"[bold red]error:[/] {model} is not a readable model: {str(e).splitlines()[0][:200]}")
        raise typer.Exit(2)
    typer.echo(res.model_dump_json(indent=1))
    if res.latency_ms is None:
        raise typer.Exit(1)


@app.command("eval")
def evaluate(predictor: str, backend: str = typer.Option(..., "--backend"),
             n: int = typer.Option(300, "--n", help="subnets per hyperspace (of the --set)"),
             start: int = typer.Option(0, "--start", min=0, help="skip the first START subnets per hyperspace of "
                                       "the --set: e.g. --start 300 --n 150 is random-300 to -449, networks no "
                                       "committed run measured (a fresh held-out set)"),
             hyperspaces: str = typer.Option("onnxw,mobilew", "--hyperspaces"),
             seqnets: Optional[Path] = typer.Option(None, "--seqnets", help="spaceevo_search_result.yaml to add the SEQnets"),
             keras_apps: str = typer.Option("", "--keras-apps", help="tflite-cpu only: e.g. MobileNetV2,ResNet50"),
             repredict_from: Optional[Path] = typer.Option(None, "--repredict", help="results.jsonl of an earlier "
                                                           "eval: re-predict its measured subnets, measure nothing"),
             out: Path = typer.Option(..., "--out", help="report folder (results.jsonl is resumable)"),
             budget_min: Optional[float] = typer.Option(None, "--budget-min", help="stop measuring after this many "
                                                        "minutes and report what is done (rerun to continue)"),
             rounds: int = typer.Option(3, "--rounds", min=1, help="records per network, spread over time; the "
                                        "fastest counts (one record is too noisy on a shared VM)"),
             block: int = typer.Option(8, "--block", min=1, help="networks measured interleaved per block: a network's "
                                       "records are one round of its block apart, so a larger block spreads them "
                                       "over longer (each round is kept as it is measured: a stop loses none)"),
             quiet_rounds: bool = typer.Option(True, "--quiet-rounds/--no-quiet-rounds", help="rounds after the "
                                               "first wait until the next block's exports are done"),
             lend_core: bool = typer.Option(True, "--lend-core/--no-lend-core", help="while a quiet round waits for "
                                            "the exports, a second export process runs on the measuring core (it "
                                            "stops before the round is measured)"),
             anchor: bool = typer.Option(False, "--anchor/--no-anchor", help="measure the backend's anchor network "
                                         "beside every block and also report anchored latencies (predictors/anchor.py;"
                                         " off by default: on the Zen 4 host it added more noise than it removed)"),
             retry_failed: bool = typer.Option(True, "--retry-failed/--no-retry-failed", help="a resumed run tries "
                                               "networks that failed before (export error, runtime crash) again"),
             set_: str = typer.Option("random", "--set", help="random: the held-out evaluation set; calib: the "
                                      "calibration set (other seeds) for `predictors calibrate`; calib-small: more "
                                      "calibration networks, from the lowest third by MACs (pass both sets' "
                                      "results to calibrate)"),
             save_eval: bool = typer.Option(False, "--save-eval", help="also write the summary as eval.json beside "
                                            "the predictor, where the service reports it (GET /predictors)"),
             online: int = typer.Option(0, "--online", help="with --repredict: predict each network with a session "
                                        "fit on the last ONLINE networks measured before it (predictors.online; "
                                        "16 is the default window; 0: off)"),
             online_max_age: float = typer.Option(30.0, "--online-max-age", help="with --online: fit no network "
                                                  "measured more than this many minutes before"),
             like: Optional[Path] = typer.Option(None, "--like", help="results.jsonl of an earlier eval: measure its "
                                                 "networks again, in its order (instead of --set/--n/--seqnets)"),
             measured_below: Optional[float] = typer.Option(None, "--measured-below", help="with --like: only the "
                                                            "networks that run measured under this many ms"),
             records: Optional[str] = typer.Option(None, "--records", help="with --repredict: judge each network by "
                                                   "its records A to B-1 only (A:B, e.g. 0:3: what 3 rounds gave)"),
             measured_from: Optional[str] = typer.Option(None, "--measured-from", help="with --repredict: only the "
                                                         "networks measured at or after this UTC time (ISO 8601, "
                                                         "e.g. 2026-12-07T15:00): one session of a file that holds "
                                                         "several"),
             measured_to: Optional[str] = typer.Option(None, "--measured-to", help="with --repredict: only the "
                                                       "networks measured before this UTC time")):
    """Measure held-out subnets end to end and report RMSE, RMSPE, +-5% and +-10% with a scatter plot."""
    from .evaluate import SETS, eval_set, evaluate as run, report

    if set_ not in SETS:
        err.print(f"[bold red]error:[/] --set: {set_!r} is not allowed; allowed: {', '.join(SETS)}")
        raise typer.Exit(2)
    kept = _records(records, "--records")
    if kept is not None and repredict_from is None:
        err.print("[bold red]error:[/] --records: selects records of measured runs; give --repredict RESULTS")
        raise typer.Exit(2)
    if repredict_from is not None and not repredict_from.is_file():
        err.print(f"[bold red]error:[/] --repredict: {repredict_from}: not found; give the results.jsonl of a "
                  "`predictors eval` run")
        raise typer.Exit(2)
    if measured_below is not None and like is None:
        err.print("[bold red]error:[/] --measured-below: filters an earlier run's networks; give --like RESULTS")
        raise typer.Exit(2)
    if like is not None and not like.is_file():
        err.print(f"[bold red]error:[/] --like: {like}: not found; give the results.jsonl of a `predictors eval` run")
        raise typer.Exit(2)
    window = _window(measured_from, measured_to, repredict_from)
    p = _load(predictor)
    title = f"{p.meta.device} {p.meta.backend}: predicted vs measured INT8" + _calibration_label(p)
    # Judged anchored in the machine state of the predictor's own calibration, where it has one (predictors/anchor.py)
    ref = p.meta.calibration.anchor_ref_ms if p.meta.calibration and set_ == "random" else None
    # and probe-normalized in the machine state of that calibration (predictors/speed.py)
    pref = p.meta.calibration.probe_ref_ms if p.meta.calibration and set_ == "random" else None
    # A window's or a record range's selection is an intermediate: it goes to a temporary folder, removed
    # when this command returns, not into the report folder beside results.jsonl.
    scratch = tempfile.TemporaryDirectory(prefix="predictors-eval-") if window is not None or kept is not None else None
    if window is not None:
        from .evaluate import select_measured, write_results

        since, until = window
        picked = select_measured(repredict_from, since, until)
        if not picked:
            err.print(f"[bold red]error:[/] --measured-from/--measured-to: no network of {repredict_from} was measured "
                      f"in [{measured_from or 'start'}, {measured_to or 'end'})")
            raise typer.Exit(2)
        repredict_from = write_results(picked.values(), Path(scratch.name) / "measured-window.jsonl")
        title += ", networks measured " + (f"{measured_from} to {measured_to}" if measured_from and measured_to else
                                           f"from {measured_from}" if measured_from else f"before {measured_to}") + " UTC"
    if kept is not None:
        from .evaluate import select_records, write_results

        kept_path = Path(scratch.name) / f"measured-records-{records.replace(':', '-')}.jsonl"
        repredict_from = write_results(select_records(repredict_from, kept).values(), kept_path)
        title += f", records {records} of each network"
    if online and repredict_from is None:
        err.print("[bold red]error:[/] --online: replays measured records; give --repredict RESULTS (run the "
                  "evaluation first, then replay it)")
        raise typer.Exit(2)
    if repredict_from is not None and online:
        from pydantic import ValidationError

        from .online import OnlineSettings, replay

        try:
            settings = OnlineSettings(window=online, max_age_min=online_max_age)
            replay(p, repredict_from, out / "results.jsonl", settings)
        except (ValidationError, ValueError) as e:
            err.print(f"[bold red]error:[/] --online: {str(e).splitlines()[0]}" + (
                f"; {e.errors()[0]['loc'][0]} {e.errors()[0]['msg']}" if isinstance(e, ValidationError) else ""))
            raise typer.Exit(2)
        title += f", online: refit on the last {online} networks within {online_max_age:g} min"
        summary = report(out / "results.jsonl", out, title)
        typer.echo(json.dumps(summary, indent=1))
        return
    if repredict_from is not None:
        from .evaluate import repredict

        repredict(p, repredict_from, out / "results.jsonl")
        summary = report(out / "results.jsonl", out, title, anchor_ref_ms=ref, probe_ref_ms=pref)
        _save_eval(predictor, p, summary, out, save_eval)
        typer.echo(json.dumps(summary, indent=1))
        return
    try:
        if like is not None:
            from .evaluate import items_like

            items = items_like(like, measured_below)
        else:
            items = eval_set([h.strip() for h in hyperspaces.split(",")], n, seqnets=seqnets, kind=set_, start=start)
    except ValueError as e:
        err.print(f"[bold red]error:[/] {'--like' if like is not None else '--hyperspaces'}: {e}")
        raise typer.Exit(2)
    apps = [a.strip() for a in keras_apps.split(",") if a.strip()]
    from .evaluate import KERAS_APPS

    bad = [a for a in apps if a not in KERAS_APPS]
    if bad or (apps and backend != "tflite-cpu"):
        err.print(f"[bold red]error:[/] --keras-apps: {', '.join(bad) or 'needs --backend tflite-cpu'}; allowed: "
                  f"{', '.join(KERAS_APPS)} with --backend tflite-cpu")
        raise typer.Exit(2)
    items += [(f"keras:{a}", "", "") for a in apps]
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .evaluate import ResultsClash

    with Progress(TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[last]}"), console=err) as prog:
        task = prog.add_task("eval", total=len(items), last="")
        try:
            run(p, backend, items, out / "results.jsonl", budget_s=budget_min * 60 if budget_min else None,
                rounds=rounds, block=block, quiet_rounds=quiet_rounds, retry_failed=retry_failed, anchor=anchor,
                lend_core=lend_core, progress=lambda i, tot, r: prog.update(
                    task, completed=i, last=f"{r['name']}: predicted {r['predicted_ms']:.2f} "
                                            f"measured {r['measured_ms'] or float('nan'):.2f} ms"))
        except ResultsClash as e:
            err.print(f"[bold red]error:[/] --out: {e}")
            raise typer.Exit(2)
    summary = report(out / "results.jsonl", out, title, anchor_ref_ms=ref, probe_ref_ms=pref)
    _save_eval(predictor, p, summary, out, save_eval)
    typer.echo(json.dumps(summary, indent=1))


@app.command()
def agreement(first: Path, second: Path,
              out: Optional[Path] = typer.Option(None, "--out", help="also write the figures as JSON here"),
              first_records: Optional[str] = typer.Option(None, "--first-records", help="A:B: keep only records A to "
                                                          "B-1 of each network of the first run (e.g. 0:3)"),
              second_records: Optional[str] = typer.Option(None, "--second-records", help="A:B, the same for the "
                                                           "second run (e.g. 3:6 with the same file twice)")):
    """How two measurement runs of the same networks agree (two results.jsonl): the ceiling of any predictor."""
    from .evaluate import agreement as run

    for f in (first, second):
        if not f.is_file():
            err.print(f"[bold red]error:[/] {f}: not found; give two results.jsonl of `predictors eval` runs")
            raise typer.Exit(2)
    records = (_records(first_records, "--first-records"), _records(second_records, "--second-records"))
    try:
        a = run(first, second, records)
    except ValueError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2)
    err.print(f"{a['n']} networks measured twice: second/first median {a['drift']:.3f}; within ±10% {a['acc10']:.1%} "
              f"(±5% {a['acc5']:.1%}), RMSPE {a['rmspe']:.3f}; with the median drift divided out, within ±10% "
              f"{a['acc10_drift_removed']:.1%} (±5% {a['acc5_drift_removed']:.1%})")
    z = a["local drift removed"]
    err.print(f"with the drift of each stretch of {z['block']} networks divided out instead ({z['blocks']} stretches, "
              f"drift {z['drift_min']:.3f} to {z['drift_max']:.3f}): within ±10% {z['acc10']:.1%} (±5% {z['acc5']:.1%})")
    for label, ref_name, ref_fmt in (("anchored", "anchor", ".3f"), ("probe-normalized", "probe", ".4f")):
        if label in a:
            z = a[label]
            err.print(f"{label} ({z['n']} networks, both at the first run's {ref_name} {z['ref_ms']:{ref_fmt}} ms): "
                      f"second/first median {z['drift']:.3f}; within ±10% {z['acc10']:.1%} (±5% {z['acc5']:.1%}), "
                      f"RMSPE {z['rmspe']:.3f}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"first": str(first), "second": str(second), "first_records": first_records,
                                   "second_records": second_records, **a}, indent=1) + "\n")
    typer.echo(json.dumps(a, indent=1))


@app.command()
def consensus(predictor: str, results: list[Path] = typer.Argument(..., help="results.jsonl of `predictors eval` "
                                                                       "runs of the same networks, one per session"),
              out: Path = typer.Option(..., "--out", help="folder for consensus.json, consensus.jsonl, scatter.png"),
              min_runs: int = typer.Option(2, "--min-runs", min=1, help="judge only networks measured in at least "
                                           "this many of the sessions")):
    """Judge a predictor against the median of several sessions' measurements, and each session against the others.

    One session's measurement of a small network reproduces in another only so often on a shared VM; this says
    how much of a predictor's miss is the predictor and how much the session (predictors/consensus.py)."""
    from .consensus import consensus as run, plot
    from .evaluate import write_results

    missing = [str(f) for f in results if not f.is_file()]
    if missing:
        err.print(f"[bold red]error:[/] {', '.join(missing)}: not found; give results.jsonl of `predictors eval` runs")
        raise typer.Exit(2)
    p = _load(predictor)
    try:
        doc, recs = run(p, results, min_runs=min_runs, label=predictor)
    except ValueError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2)
    out.mkdir(parents=True, exist_ok=True)
    (out / "consensus.json").write_text(doc.model_dump_json(indent=1) + "\n")
    write_results(recs, out / "consensus.jsonl")
    plot(recs, out, f"{p.meta.device} {p.meta.backend}: predicted vs the median of {len(results)} sessions"
                    + _calibration_label(p))
    t = Table(title=f"{predictor} against the median of {len(results)} sessions ({doc.n_networks} networks, "
                    f"median {doc.runs_median:g} sessions each)")
    for c in ("set", "n", "RMSPE", "±5%", "±10%"):
        t.add_column(c)
    for g, m in doc.groups.items():
        t.add_row(g, str(m["n"]), f"{m['rmspe']:.3f}", f"{m['acc5']:.1%}", f"{m['acc10']:.1%}")
    err.print(t)
    t = Table(title="each session against the others' median (the ceiling against that session alone)")
    t.add_column("session", overflow="fold")
    for c in ("n", "drift", "±10%", "±10% drift removed", "predictor ±10% vs it"):
        t.add_column(c)
    for s in doc.sessions:
        t.add_row(Path(s.results).parent.name or s.results, str(s.n),
                  *("-" if v is None else f"{v:{fmt}}" for v, fmt in ((s.drift, ".3f"), (s.acc10, ".1%"),
                                                                      (s.acc10_drift_removed, ".1%"),
                                                                      (s.predictor_acc10, ".1%"))))
    err.print(t)
    err.print(f"wrote {out / 'consensus.json'}, consensus.jsonl, scatter.png")
    typer.echo(doc.model_dump_json(indent=1))


def _records(text: Optional[str], option: str) -> Optional[slice]:
    """``A:B`` (either end may be left out) -> slice(A, B): which of each network's records to keep."""
    if text is None:
        return None
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        a, b = (int(x) if x.strip() else None for x in parts)
        if (a is not None and a < 0) or (b is not None and b < 0) or (a is not None and b is not None and b <= a):
            raise ValueError
    except ValueError:
        err.print(f"[bold red]error:[/] {option}: {text!r} is not allowed; allowed: A:B with 0 <= A < B, either "
                  "end may be left out (records A to B-1 of each network, counted from 0), e.g. 0:3 or 3:")
        raise typer.Exit(2)
    return slice(a, b)


def _window(since: str | None, until: str | None, repredict_from: Path | None):
    """(since, until) as UTC datetimes, None when neither is given; exits 2 naming the bad option."""
    if since is None and until is None:
        return None
    if repredict_from is None:
        err.print("[bold red]error:[/] --measured-from/--measured-to: select networks of a measured run; "
                  "give --repredict RESULTS")
        raise typer.Exit(2)
    from .evaluate import parse_utc

    got = []
    for opt, text in (("--measured-from", since), ("--measured-to", until)):
        try:
            got.append(None if text is None else parse_utc(text))
        except ValueError:
            err.print(f"[bold red]error:[/] {opt}: {text!r} is not allowed; allowed: an ISO 8601 time, UTC unless "
                      "it names a zone, e.g. 2026-12-07T15:00")
            raise typer.Exit(2)
    if got[0] is not None and got[1] is not None and got[1] <= got[0]:
        err.print(f"[bold red]error:[/] --measured-to: {until!r} is not after --measured-from {since!r}")
        raise typer.Exit(2)
    return got[0], got[1]


def _calibration_label(p) -> str:
    cal = p.meta.calibration
    if cal is None:
        return " (kernel sum)"
    if cal.session is None:
        return f" (calibrated on {cal.n_models} networks)"
    s = cal.session
    return (f" (calibrated on {s.base.n_models} networks, session-refit on {s.n_models}"
            + (f" at {s.measured_to[:16]}" if s.measured_to else "") + ")")


def _save_eval(spec: str, p, summary: dict, out: Path, save: bool) -> None:
    """eval.json beside the predictor: what GET /predictors shows as its end-to-end accuracy."""
    if not save:
        return
    from .bundled import resolve_predictor

    path = resolve_predictor(spec) / "eval.json"
    doc = {"report": str(out), "predictor_created_at": p.meta.created_at,
           "calibrated": p.meta.calibration is not None, "sets": summary}
    if p.meta.calibration is not None and p.meta.calibration.session is not None:
        doc["session"] = p.meta.calibration.session.summary()
    path.write_text(json.dumps(doc, indent=1) + "\n")
    err.print(f"wrote {path}")


@app.command()
def calibrate(predictor: str, results: list[Path] = typer.Option(..., "--results", help="results.jsonl of "
                                                                  "`predictors eval --set calib` (measured subnets); "
                                                                  "repeat it for runs of the same set from other "
                                                                  "sessions (each network keeps its fastest record)"
                                                                  " and for the calib-small set"),
              out: Optional[Path] = typer.Option(None, "--out", help="predictor directory to write [default: in place]"),
              folds: int = typer.Option(5, "--folds", min=2),
              anchored: bool = typer.Option(False, "--anchored/--raw", help="fit anchored latencies where the "
                                            "networks were measured beside an anchor (predictors/anchor.py); raw "
                                            "by default: on the Zen 4 host anchoring added more noise than it removed"),
              session: bool = typer.Option(False, "--session", help="refit only a global scale and the per-kernel "
                                           "cost on top of the predictor's calibration, from networks measured in "
                                           "this session (e.g. --set calib-small --n 5..15): the machine state of "
                                           "a shared host moves between sessions (predictors.calibration)")):
    """Fit per-kernel-type scales on whole networks measured end to end (see predictors.calibration)."""
    from .bundled import resolve_predictor
    from .calibration import calibrate as fit

    p = _load(predictor)
    for path in results:
        if not path.is_file():
            s, n = ("calib-small", 15) if session else ("calib", 40)
            err.print(f"[bold red]error:[/] --results: {path} not found; measure a calibration set first: "
                      f"python -m predictors eval {predictor} --backend {p.meta.backend} --set {s} --n {n} --out DIR")
            raise typer.Exit(2)
        if any(f"-random-" in l for l in path.read_text().splitlines()):
            err.print(f"[bold red]error:[/] --results: {path} holds evaluation networks (<hyperspace>-random-<i>); "
                      "calibrating on them would judge the predictor on what it was fitted to; use --set calib")
            raise typer.Exit(2)
    if session:
        if out is None:  # a session's state passes; the predictor it refits (often a bundled one) stays as it is
            err.print("[bold red]error:[/] --out: needed with --session (a directory for the session's predictor; "
                      "the base predictor is not rewritten)")
            raise typer.Exit(2)
        _session(p, results, out)
        return
    try:
        cal = fit(p, results, folds, anchored=anchored)
    except ValueError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2)
    p.meta = p.meta.model_copy(update={"calibration": cal})
    p._cache.clear()
    dest = out or resolve_predictor(predictor)
    p.save(dest)
    t = Table("kernel type", "scale", title=f"calibration on {cal.n_models} networks (lambda {cal.lam:g})")
    for k, a in sorted(cal.scales.items()):
        t.add_row(k, f"{a:.3f}")
    t.add_row("io", f"{cal.io_scale:.3f}")
    t.add_row("per kernel (ms)", f"{cal.per_kernel_ms:.4f}")
    t.add_row("fixed (ms)", f"{cal.fixed_ms:.3f}")
    Console().print(t)
    if cal.anchor_ref_ms is not None:
        err.print(f"fitted to anchored latencies: the anchor network at {cal.anchor_ref_ms:.3f} ms (this set's median)")
    if cal.probe_ref_ms is not None:
        err.print(f"machine state of the calibration set: reference probe median {cal.probe_ref_ms:.4f} ms "
                  "(evaluations report probe-normalized figures at it; predictors/speed.py)")
    raw, cv = cal.cv["raw"], cal.cv["calibrated_out_of_fold"]
    err.print(f"on the calibration set: kernel sum RMSPE {raw['rmspe']:.3f}, +-10% {raw['acc10']:.1%}; calibrated "
              f"(out of fold) RMSPE {cv['rmspe']:.3f}, +-10% {cv['acc10']:.1%}; wrote {dest}")


def _session(p, results: list[Path], out: Path) -> None:
    """calibrate --session: refit g and d, write the predictor to ``out``, and show what moved."""
    from .calibration import session_calibrate

    try:
        cal = session_calibrate(p, results)
    except ValueError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2)
    p.meta = p.meta.model_copy(update={"calibration": cal})
    p._cache.clear()
    p.save(out)
    s = cal.session
    t = Table("", "base", "this session", title=f"session calibration on {s.n_models} networks "
              f"({s.measured_from or '?'} to {s.measured_to or '?'}, lambda {s.lam:g})")
    t.add_row("global scale g", "1", f"{s.scale:.4f}")
    t.add_row("per kernel d (µs)", f"{s.base.per_kernel_ms * 1e3:.2f}", f"{s.per_kernel_ms * 1e3:.2f}")
    b, loo = s.cv["base"], s.cv["session_leave_one_out"]
    t.add_row("session set: RMSPE", f"{b['rmspe']:.3f}", f"{loo['rmspe']:.3f} (leave-one-out)")
    t.add_row("session set: within ±10%", f"{b['acc10']:.1%}", f"{loo['acc10']:.1%} (leave-one-out)")
    Console().print(t)
    for w in s.warnings:
        err.print(f"[bold yellow]warning:[/] {w}")
    if s.probe_ms is not None:
        err.print(f"machine state of the session: reference probe median {s.probe_ms:.4f} ms")
    err.print(f"wrote {out}")


def main() -> None:
    from profilers.shutdown import exit_cleanly_on_sigterm

    exit_cleanly_on_sigterm()  # a killed eval/collect removes its temp folder and stops its workers
    app()


if __name__ == "__main__":
    main()
