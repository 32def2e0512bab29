"""``python -m profilers``: measure models and kernels on real runtimes.

    python -m profilers measure MODEL --backend onnxruntime-cpu      # one record, JSON on stdout
    python -m profilers collect --backend tflite-cpu --kernels conv-bn-relu,se --budget-min 10 --out data/k
    python -m profilers fusion --backend onnxruntime-cpu --out docs/fusion
    python -m profilers study --backend onnxruntime-cpu --out docs/study
    python -m profilers noise MODEL --backend onnxruntime-cpu --repeats 20 --out docs/noise
    python -m profilers agent --server http://127.0.0.1:8000 --backend onnxruntime-cpu --token $HIL_AGENT_TOKEN
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .protocol import Protocol
from .runners import BACKENDS

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
app = typer.Typer(add_completion=False, no_args_is_help=True, help="Measure INT8 models and kernels on real runtimes.")
err = Console(stderr=True)


def _backend(b: str) -> str:
    if b not in BACKENDS:
        err.print(f"[bold red]error:[/] --backend: {b!r} is not allowed; allowed: {', '.join(BACKENDS)}")
        raise typer.Exit(2)
    return b


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[last]}"), console=err)


_BACKEND = typer.Option(..., "--backend", help=f"one of: {', '.join(BACKENDS)}")
_CORE = typer.Option(None, "--core", help="CPU core to pin to (default: the last one)")


@app.command()
def measure(model: Path, backend: str = _BACKEND, core: Optional[int] = _CORE,
            budget_s: float = typer.Option(10.0, "--budget-s", help="time budget of the protocol"),
            estimator: str = typer.Option("p10", "--estimator", help="p10 (default), median, min, mean or pNN")):
    """Measure one model with the protocol; prints the record as JSON (exit 1 if it failed)."""
    from .worker import Profiler

    with Profiler(_backend(backend), core=core, protocol=Protocol(budget_s=budget_s, estimator=estimator)) as p:
        m = p.measure(model)
    typer.echo(m.model_dump_json(indent=2))
    if not m.ok:
        raise typer.Exit(1)



@app.command()
def agent(server: str = typer.Option(os.environ.get("HIL_SERVICE_URL", "http://127.0.0.1:8000"), "--server",
                                     help="latency server URL (default $HIL_SERVICE_URL)"),
          backend: list[str] = typer.Option(..., "--backend", help="backend to serve; repeat for several"),
          device: Optional[str] = typer.Option(None, "--device", help="device name (one backend only); default "
                                               "<backend>@<device slug>"),
          token: Optional[str] = typer.Option(None, "--token", help="agent token (default $HIL_AGENT_TOKEN)"),
          core: Optional[int] = _CORE,
          wait_s: float = typer.Option(10.0, "--wait-s", help="long-poll time of one lease request"),
          max_jobs: Optional[int] = typer.Option(None, "--max-jobs", help="exit after this many jobs"),
          idle_exit_s: Optional[float] = typer.Option(None, "--idle-exit-s", help="exit after idling this long"),
          spool: Optional[Path] = typer.Option(None, "--spool", help="where undelivered results wait "
                                               "(default ~/.cache/hil-latency/agent)"),
          adb: Optional[str] = typer.Option(None, "--adb", help="tflite-android: HOST:PORT of the phone (or usb)"),
          profile: Optional[str] = typer.Option(None, "--profile", help="tflite-android: pixel4, kirin9000 or a "
                                                "JSON file (see profilers/android/profiles)"),
          benchmark_model: Optional[Path] = typer.Option(None, "--benchmark-model",
                                                         help="tflite-android: TFLite's benchmark_model binary"),
          session: int = typer.Option(0, "--session", min=0, help="at start-up, measure this many calib-small "
                                      "networks per hyperspace (5: about 2 min on onnxruntime) and post them as the "
                                      "device's session calibration (POST /predictors/{device}/session); 0: none"),
          session_every: Optional[float] = typer.Option(None, "--session-every", help="with --session: measure "
                                                        "them again after this many minutes, when no job waits (on "
                                                        "a shared VM the state moved within 30 min)")):
    """Device agent: register this host's BACKENDs with the server, lease jobs, measure, post results."""
    import logging
    import signal

    from .agent import AgentFatal, DeviceAgent, default_spool

    from .agent import AGENT_BACKENDS

    for b in backend:
        if b not in AGENT_BACKENDS:
            err.print(f"[bold red]error:[/] --backend: {b!r} is not allowed; allowed: {', '.join(AGENT_BACKENDS)}")
            raise typer.Exit(2)
    token = token or os.environ.get("HIL_AGENT_TOKEN")
    if not token:
        err.print("[bold red]error:[/] --token: missing; create one with `python -m server token create --role agent "
                  "--name NAME` and pass it here or in $HIL_AGENT_TOKEN")
        raise typer.Exit(2)
    logging.basicConfig(level=logging.WARNING)
    try:
        a = DeviceAgent(server, backend, token, device=device, core=core, wait_s=wait_s,
                        spool=spool or default_spool(), adb=adb, profile=profile, benchmark_binary=benchmark_model,
                        session_n=session, session_every_min=session_every,
                        on_event=lambda m: err.print(m, markup=False, soft_wrap=True))
    except (ValueError, OSError) as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: a.stop.set())  # finish (and post) the job in hand, then exit
    try:
        n = a.run(max_jobs=max_jobs, idle_exit_s=idle_exit_s)
    except AgentFatal as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2)
    except ConnectionError as e:
        err.print(f"stopped while the server was unreachable: {e}")
        raise typer.Exit(1)
    err.print(f"agent stopped after {n} jobs")

@app.command()
def collect(backend: str = _BACKEND, kernels: str = typer.Option("all", "--kernels", help="comma-separated kernel types or 'all'"),
            out: Path = typer.Option(..., "--out", help="dataset folder (resumable)"),
            budget_min: Optional[float] = typer.Option(None, "--budget-min", help="stop after this many minutes"),
            per_type: int = typer.Option(50, "--per-type", min=1, help="prior configs per kernel type"),
            precision: str = typer.Option("int8", "--precision", help="int8, fp32 or int8,fp32"),
            refine: Optional[Path] = typer.Option(None, "--refine", help="JSONL of badly predicted KernelConfigs"),
            seed: int = typer.Option(0, "--seed"), core: Optional[int] = _CORE):
    """Collect kernel latencies (nn-Meter style) into OUT/measurements.jsonl; safe to kill and rerun."""
    from exporters.kernel_config import KernelConfig

    from .collect import collect as run
    from .samplers import kernel_types

    known = kernel_types()
    types = known if kernels == "all" else [k.strip() for k in kernels.split(",") if k.strip()]
    bad = [t for t in types if t not in known]
    if bad:
        err.print(f"[bold red]error:[/] --kernels: {', '.join(bad)} not allowed; allowed: {', '.join(known)}")
        raise typer.Exit(2)
    precs = tuple(p.strip() for p in precision.split(","))
    if not set(precs) <= {"int8", "fp32"}:
        err.print(f"[bold red]error:[/] --precision: {precision!r} is not allowed; allowed: int8, fp32, int8,fp32")
        raise typer.Exit(2)
    seeds = [KernelConfig.model_validate_json(l) for l in refine.read_text().splitlines() if l.strip()] if refine else []
    with _progress() as prog:
        task = prog.add_task(f"collect {backend}", total=None, last="")

        def cb(done, total, rec):
            last = "" if rec is None else (f"{rec.config.type} {rec.precision} "
                                           f"{rec.measurement.latency_ms or float('nan'):.3f} ms")
            prog.update(task, completed=done, total=total, last=last)

        ds = run(_backend(backend), types, out, per_type=per_type, precisions=precs,
                 budget_s=budget_min * 60 if budget_min else None, seed=seed, refine=seeds, core=core, progress=cb)
    err.print(f"{len(ds)} records in {ds.path}")


@app.command()
def fusion(backend: str = _BACKEND, out: Path = typer.Option(Path("docs/fusion"), "--out"),
           precision: str = typer.Option("int8", "--precision"), alpha: float = typer.Option(0.5, "--alpha"),
           core: Optional[int] = _CORE,
           rounds: int = typer.Option(3, "--rounds", min=1, help="interleaved rounds; each model keeps its fastest"),
           max_rounds: Optional[int] = typer.Option(None, "--max-rounds", min=1,
                                                    help="more rounds for a pair whose kept records are unstable, "
                                                         "up to this many (default: twice --rounds)")):
    """Decide which op pairs this backend fuses (T1 + T2 - T12 > alpha * min(T1, T2))."""
    from .fusion import test_fusion

    def cb(name, r):
        err.print(f"{name:28s} T1 {r.t1_ms:8.4f}  T2 {r.t2_ms:8.4f}  T12 {r.t12_ms:8.4f} ms  "
                  f"{'FUSED' if r.fused else 'separate'}{'' if r.stable else ' (unstable)'}  ({r.rounds} rounds)")

    if max_rounds is not None and max_rounds < rounds:
        raise typer.BadParameter(f"--max-rounds ({max_rounds}) must be at least --rounds ({rounds})")
    rules = test_fusion(_backend(backend), precision=precision, alpha=alpha, core=core, progress=cb, rounds=rounds,
                        max_rounds=max_rounds)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{backend}-{precision}.json"
    path.write_text(rules.model_dump_json(indent=1))
    err.print(f"wrote {path}")


@app.command()
def study(backend: str = _BACKEND, out: Path = typer.Option(Path("docs/study"), "--out"),
          core: Optional[int] = _CORE, budget_s: float = typer.Option(3.0, "--budget-s")):
    """INT8-over-FP32 speedups per operator, kernel size and channel count (paper Tables 1, 8; Figs. 3, 9)."""
    from .study import run_study

    with _progress() as prog:
        task = prog.add_task(f"study {backend}", total=None, last="")
        run_study(_backend(backend), out, protocol=Protocol(budget_s=budget_s, min_duration_s=1.0), core=core,
                  progress=lambda d, n, r: prog.update(task, completed=d, total=n,
                                                       last=f"{r['study']} {r['label']} {r.get('speedup', 0):.2f}x"))
    err.print(f"wrote {out}/{backend}.md, {out}/{backend}.json and plots")


@app.command()
def boundary(out: Path = typer.Option(..., "--out", help="an onnxruntime-cpu dataset directory (with overhead.json)"),
             core: Optional[int] = _CORE):
    """Measure the QuantizeLinear/DequantizeLinear cost per element that each onnxruntime kernel model pays
    and a network pays once; writes it into OUT/overhead.json for the predictors to remove."""
    from .collect import update_boundary

    try:
        doc = update_boundary(out, core)
    except (FileNotFoundError, ValueError) as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2)
    b = doc["boundary"]
    for op in ("quantize", "dequantize"):
        err.print(f"{op:10s} {b[op]['intercept_ms']:.4f} ms + {b[op]['ns_per_element']:.3f} ns/element")
    err.print(f"wrote {out / 'overhead.json'}")


@app.command()
def noise(model: Path, backend: str = _BACKEND, repeats: int = typer.Option(20, "--repeats", min=2),
          gap_s: float = typer.Option(6.0, "--gap-s", help="pause between measurements"),
          out: Path = typer.Option(Path("docs/noise"), "--out"), core: Optional[int] = _CORE):
    """Measure one model REPEATS times over minutes; report how repeatable each estimator is."""
    from .noise import noise_floor, write_noise_report

    with _progress() as prog:
        task = prog.add_task("noise floor", total=repeats, last="")
        res = noise_floor(model, _backend(backend), repeats, gap_s, core=core,
                          progress=lambda d, n, m: prog.update(task, completed=d,
                                                               last=f"p10 {m.p10_ms or 0:.3f} median {m.median_ms or 0:.3f} ms"))
    path = write_noise_report(res, out)
    typer.echo(path.read_text())


def main() -> None:
    from .shutdown import exit_cleanly_on_sigterm

    exit_cleanly_on_sigterm()  # a killed eval/collect removes its temp folder and stops its workers
    app()


if __name__ == "__main__":
    main()
