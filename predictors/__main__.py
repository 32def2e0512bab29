"""``python -m predictors``: train, inspect and evaluate INT8 kernel-latency predictors.

    python -m predictors train --data data/kernels/onnxruntime-cpu --device onnxruntime-cpu --out predictors/bundled/onnxruntime-cpu
    python -m predictors train-adaptive --backend onnxruntime-cpu --data data/kernels/onnxruntime-cpu --device onnxruntime-cpu --out predictors/bundled/onnxruntime-cpu
    python -m predictors info predictors/bundled/onnxruntime-cpu
    python -m predictors predict predictors/bundled/onnxruntime-cpu --space onnxw-151122-023231 --arch d1#..._r160
    python -m predictors predict-model predictors/bundled/onnxruntime-cpu model.onnx   (or .tflite)
    python -m predictors eval predictors/bundled/onnxruntime-cpu --backend onnxruntime-cpu --n 300 --out reports/ort
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="INT8 kernel-latency predictors.")
err = Console(stderr=True)


@app.command()
def train(data: Path = typer.Option(..., "--data", help="collection folder (measurements.jsonl) or the file"),
          device: str = typer.Option(..., "--device", help="device name stored in the predictor"),
          out: Path = typer.Option(..., "--out", help="predictor directory to write"),
          include_unstable: bool = typer.Option(False, "--include-unstable", help="also train on stable=false records"),
          min_records: int = typer.Option(10, "--min-records")):
    """Train one forest per kernel type (small per-kernel search) and save a pickle-free predictor."""
    from .train import train as run

    path = data / "measurements.jsonl" if data.is_dir() else data
    if not path.is_file():
        err.print(f"[bold red]error:[/] --data: {data} has no measurements.jsonl")
        raise typer.Exit(2)
    t = Table("kernel", "records", "target", "RMSPE", "+-10%", title=f"held-out kernel error ({device})")
    pred = run(path, device, stable_only=not include_unstable, min_records=min_records,
               progress=lambda k, info: t.add_row(k, str(info.metrics["n"] + info.metrics["n_train"]), info.target,
                                                  f"{info.metrics['rmspe']:.3f}", f"{info.metrics['acc10']:.0%}"))
    pred.save(out)
    Console().print(t)
    err.print(f"wrote {out}")


@app.command("train-adaptive")
def train_adaptive(backend: str = typer.Option(..., "--backend"),
                   data: Path = typer.Option(..., "--data", help="collection folder; new measurements go here too"),
                   device: str = typer.Option(..., "--device"), out: Path = typer.Option(..., "--out"),
                   rounds: int = typer.Option(5, "--rounds", min=1),
                   round_min: float = typer.Option(10.0, "--round-min", help="measuring budget per round (minutes)"),
                   refine_top: int = typer.Option(100, "--refine-top")):
    """Train, refine around the worst-predicted kernels, retrain, until held-out error stops improving."""
    from .adaptive import adaptive_train

    def cb(r, err_, n):
        err.print(f"round {r}: held-out kernel RMSPE {err_:.3f}" + (f" (after {n} refine seeds)" if n else ""))

    pred, hist = adaptive_train(backend, data, device, rounds, refine_top, round_min * 60, progress=cb)
    pred.save(out)
    err.print(f"RMSPE by round: {', '.join(f'{h:.3f}' for h in hist)}; wrote {out}")


@app.command()
def worst(predictor: Path, data: Path = typer.Option(..., "--data", help="the predictor's training collection"),
          out: Path = typer.Option(..., "--out", help="JSONL of KernelConfigs for `profilers collect --refine`"),
          threshold: float = typer.Option(0.10, "--threshold", help="relative out-of-fold error to count as bad"),
          top: int = typer.Option(200, "--top")):
    """Badly predicted kernel configs (out-of-fold), worst first: the seeds of the adaptive sampler."""
    from .artifact import Predictor
    from .train import worst_configs

    path = data / "measurements.jsonl" if data.is_dir() else data
    bad = worst_configs(path, Predictor.load(predictor), threshold)[:top]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(c.model_dump_json() + "\n" for _, c in bad))
    err.print(f"{len(bad)} configs above {threshold:.0%} error -> {out}; next: python -m profilers collect "
              f"--refine {out} ...")


@app.command()
def info(predictor: Path):
    """Print a predictor's metadata."""
    from .artifact import Predictor

    typer.echo(Predictor.load(predictor).meta.model_dump_json(indent=1))


@app.command()
def predict(predictor: Path, space: str = typer.Option(..., "--space"), arch: str = typer.Option(..., "--arch"),
            detail: bool = typer.Option(False, "--detail", help="per-kernel latencies")):
    """Predict one subnet (sum of its kernels); unknown kernel types are reported, not counted as 0."""
    from exporters.kernel_models import KernelConfig
    from spaces import SpaceError, resolve

    from .artifact import Predictor, predict_kernel_list

    try:
        net = resolve(space, arch)
    except SpaceError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2)
    p = Predictor.load(predictor)
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
def predict_model_cmd(predictor: Path, model: Path):
    """Predict any ONNX or TFLite model by detecting its kernels; unsupported ops are listed, never counted as 0."""
    from .artifact import Predictor, predict_model

    if not model.is_file():
        err.print(f"[bold red]error:[/] model file not found: {model}")
        raise typer.Exit(2)
    try:
        res = predict_model(Predictor.load(predictor), model)
    except Exception as e:  # onnx / flatbuffers raise their own decode errors
        err.print(f"[bold red]error:[/] {model} is not a readable model: {str(e).splitlines()[0][:200]}")
        raise typer.Exit(2)
    typer.echo(res.model_dump_json(indent=1))
    if res.latency_ms is None:
        raise typer.Exit(1)


@app.command("eval")
def evaluate(predictor: Path, backend: str = typer.Option(..., "--backend"),
             n: int = typer.Option(300, "--n", help="random held-out subnets per hyperspace"),
             hyperspaces: str = typer.Option("onnxw,mobilew", "--hyperspaces"),
             seqnets: Optional[Path] = typer.Option(None, "--seqnets", help="spaceevo_search_result.yaml to add the SEQnets"),
             keras_apps: str = typer.Option("", "--keras-apps", help="tflite-cpu only: e.g. MobileNetV2,ResNet50"),
             repredict_from: Optional[Path] = typer.Option(None, "--repredict", help="results.jsonl of an earlier "
                                                           "eval: re-predict its measured subnets, measure nothing"),
             out: Path = typer.Option(..., "--out", help="report folder (results.jsonl is resumable)")):
    """Measure held-out subnets end to end and report RMSE, RMSPE, +-5% and +-10% with a scatter plot."""
    from .artifact import Predictor
    from .evaluate import eval_set, evaluate as run, report

    p = Predictor.load(predictor)
    if repredict_from is not None:
        from .evaluate import repredict

        repredict(p, repredict_from, out / "results.jsonl")
        typer.echo(json.dumps(report(out / "results.jsonl", out, f"{p.meta.device}: predicted vs measured INT8"), indent=1))
        return
    items = eval_set([h.strip() for h in hyperspaces.split(",")], n, seqnets=seqnets)
    apps = [a.strip() for a in keras_apps.split(",") if a.strip()]
    from .evaluate import KERAS_APPS

    bad = [a for a in apps if a not in KERAS_APPS]
    if bad or (apps and backend != "tflite-cpu"):
        err.print(f"[bold red]error:[/] --keras-apps: {', '.join(bad) or 'needs --backend tflite-cpu'}; allowed: "
                  f"{', '.join(KERAS_APPS)} with --backend tflite-cpu")
        raise typer.Exit(2)
    items += [(f"keras:{a}", "", "") for a in apps]
    with Console(stderr=True).status("evaluating") as st:
        run(p, backend, items, out / "results.jsonl",
            progress=lambda i, tot, r: st.update(f"{i}/{tot} {r['name']}: predicted {r['predicted_ms']:.2f} "
                                                 f"measured {r['measured_ms'] or float('nan'):.2f} ms"))
    summary = report(out / "results.jsonl", out, f"{p.meta.device}: predicted vs measured INT8")
    typer.echo(json.dumps(summary, indent=1))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
