"""End-to-end evaluation: predicted vs measured INT8 latency of whole subnets.

Held-out subnets are random subnets of random search spaces of the backend's hyperspaces, plus the
10 published SEQnets when their file is given. Each is exported (INT8), measured with the profilers'
protocol and predicted with the space's :class:`LayerTable`. Results are appended to a JSON-lines
file as they come (the run takes hours at full size and can be killed and resumed), and
:func:`report` computes RMSE, RMSPE and the share within +-5% / +-10%, with a scatter plot.
"""
from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

import numpy as np
import yaml

from exporters.calibration import Calibration
from profilers.protocol import Protocol
from profilers.worker import Profiler
from spaces import SearchSpace, resolve
from spaces.sampling import random_space, sample_subnet

from .artifact import Predictor
from .batch import EncodedSubnets, LayerTable
from .train import metrics


def eval_set(hyperspaces: list[str], n_per: int, seed: int = 0, seqnets: Path | None = None) -> list[tuple[str, str, str]]:
    """(name, space, arch) of held-out subnets; seeds differ from any training sampler's."""
    rng = random.Random(f"eval-{seed}")
    items = []
    for hs in hyperspaces:
        for i in range(n_per):
            sp = random_space(hs, rng)
            items.append((f"{hs}-random-{i}", sp.to_string(), sample_subnet(sp, "random", rng).to_string()))
    if seqnets is not None:
        d = yaml.safe_load(Path(seqnets).read_text())
        spaces = d["specific_supernet_encoding_dict"]
        for name, (sp, arch) in d["specific_subnet_encoding_dict"].items():
            if SearchSpace.parse(spaces[sp]).hyperspace.name in hyperspaces:
                items.append((name, spaces[sp], arch))
    return items


KERAS_APPS = ("MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0", "ResNet50")


def _keras_app(name: str, out: Path) -> Path:
    """A keras.applications architecture (weights=None: nothing downloaded; latency does not depend on
    the values) exported to INT8 TFLite: real models that no one here wrote."""
    import keras

    from exporters.tflite_export import export_tflite_model

    kw = {"include_preprocessing": False} if name.startswith("MobileNetV3") else {}
    model = getattr(keras.applications, name)(weights=None, input_shape=(224, 224, 3), **kw)
    return Path(export_tflite_model(model, out).path)


def evaluate(predictor: Predictor, backend: str, items, out: str | Path, protocol: Protocol | None = None,
             progress=None) -> Path:
    from exporters.onnx_export import export_onnx
    from exporters.tflite_export import export_tflite

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            try:
                done.add(json.loads(line)["name"])
            except (json.JSONDecodeError, KeyError):
                pass  # a torn last line from a killed run
    tables: dict[str, LayerTable] = {}
    with Profiler(backend, protocol=protocol or Protocol()) as prof, tempfile.TemporaryDirectory() as tmp:
        for i, (name, space, arch) in enumerate(items):
            if name in done:
                continue
            if name.startswith("keras:"):
                from .artifact import predict_model

                path = _keras_app(name[6:], Path(tmp) / "k.tflite")
                g = predict_model(predictor, path)
                rec = {"name": name, "space": None, "arch": None, "flops": None, "warnings": g.warnings,
                       "predicted_ms": g.latency_ms if g.latency_ms is not None else float("nan")}
            else:
                net = resolve(space, arch)
                r = net.resolution
                path = Path(tmp) / ("m.onnx" if backend == "onnxruntime-cpu" else "m.tflite")
                (export_onnx if backend == "onnxruntime-cpu" else export_tflite)(
                    net, path, calibration=Calibration((1, 3, r, r), 4))
                rec = {"name": name, "space": space, "arch": arch, "flops": net.flops(),
                       "predicted_ms": _predict_subnet(tables, predictor, space, arch)}
            m = prof.measure(path)
            rec.update(measured_ms=m.latency_ms, stable=m.stable, ok=m.ok, error=m.error)
            with open(out, "a") as f:
                f.write(json.dumps(rec) + "\n")
            if progress:
                progress(i + 1, len(items), rec)
    return out


def report(results: str | Path, out_dir: str | Path, title: str) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(l) for l in Path(results).read_text().splitlines() if l.strip()]
    recs = [r for r in recs if r["ok"] and r["measured_ms"] and np.isfinite(r["predicted_ms"])]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = {"all": recs, "random": [r for r in recs if "-random-" in r["name"]],
              "SEQnets": [r for r in recs if r["name"].startswith("SEQnet")],
              "keras.applications": [r for r in recs if r["name"].startswith("keras:")]}
    summary = {g: metrics(np.array([r["measured_ms"] for r in rs]), np.array([r["predicted_ms"] for r in rs]))
               for g, rs in groups.items() if rs}
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for g, marker in (("random", "o"), ("SEQnets", "*")):
        rs = groups[g]
        if rs:
            ax.scatter([r["measured_ms"] for r in rs], [r["predicted_ms"] for r in rs], s=12 if g == "random" else 60,
                       marker=marker, label=g, alpha=0.7)
    lim = max([r["measured_ms"] for r in recs] + [r["predicted_ms"] for r in recs] + [1])
    ax.plot([0, lim], [0, lim], "k-", lw=0.8)
    ax.fill_between([0, lim], [0, 0.9 * lim], [0, 1.1 * lim], color="grey", alpha=0.15, label="+-10%")
    ax.set_xlabel("measured INT8 latency (ms)")
    ax.set_ylabel("predicted (ms)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "scatter.png", dpi=80)
    plt.close(fig)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _predict_subnet(tables: dict[str, LayerTable], predictor: Predictor, space: str, arch: str) -> float:
    """Predicted latency of one subnet; one LayerTable per space, built on first use."""
    sp = SearchSpace.parse(space)
    if space not in tables:
        tables[space] = LayerTable(sp, predictor)
    return float(tables[space].predict(EncodedSubnets.from_subnets(sp, [resolve(sp, arch).subnet()]))[0])


def repredict(predictor: Predictor, results: str | Path, out: str | Path) -> Path:
    """Re-predict already measured subnets with another predictor (no new measurements).

    Measuring is the expensive part of an evaluation; a predictor change is judged on the same
    measured set by rewriting ``predicted_ms`` into ``out``."""
    tables: dict[str, LayerTable] = {}
    lines = []
    for line in Path(results).read_text().splitlines():
        r = json.loads(line)
        if r.get("space"):
            r["predicted_ms"] = _predict_subnet(tables, predictor, r["space"], r["arch"])
        lines.append(json.dumps(r))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out
