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
import time
from pathlib import Path

import numpy as np
import yaml

from exporters.calibration import Calibration
from profilers.prefetch import Prefetcher, under_prefetch
from profilers.protocol import Protocol
from profilers.worker import Profiler
from spaces import SearchSpace, resolve
from spaces.sampling import random_space, sample_subnet

from .artifact import Predictor
from .batch import EncodedSubnets, LayerTable
from .train import metrics


SETS = {"random": "eval", "calib": "calib"}  # set name -> seed prefix; the names are <hyperspace>-<set>-<i>


def eval_set(hyperspaces: list[str], n_per: int, seed: int = 0, seqnets: Path | None = None,
             kind: str = "random") -> list[tuple[str, str, str]]:
    """(name, space, arch) of held-out subnets; seeds differ from any training sampler's.

    ``kind="random"`` is the evaluation set; ``kind="calib"`` the calibration set of
    :mod:`predictors.calibration`, drawn from another seed and named ``<hyperspace>-calib-<i>``, so a
    calibrated predictor is never judged on the networks it was calibrated on.
    Order: the SEQnets first, then the hyperspaces' random subnets taken in turn, so that an evaluation
    stopped early (they take hours) is still a balanced sample. Names and subnets do not depend on
    the order, so results files of earlier runs resume."""
    if kind not in SETS:
        raise ValueError(f"set: {kind!r} is not allowed; allowed: {', '.join(SETS)}")
    rng = random.Random(f"{SETS[kind]}-{seed}")
    per_hs: list[list[tuple[str, str, str]]] = []
    for hs in hyperspaces:
        rows = []
        for i in range(n_per):
            sp = random_space(hs, rng)
            rows.append((f"{hs}-{kind}-{i}", sp.to_string(), sample_subnet(sp, "random", rng).to_string()))
        per_hs.append(rows)
    items = []
    if seqnets is not None:
        d = yaml.safe_load(Path(seqnets).read_text())
        spaces = d["specific_supernet_encoding_dict"]
        for name, (sp, arch) in d["specific_subnet_encoding_dict"].items():
            if SearchSpace.parse(spaces[sp]).hyperspace.name in hyperspaces:
                items.append((name, spaces[sp], arch))
    for i in range(n_per):
        items += [rows[i] for rows in per_hs]
    return items


KERAS_APPS = ("MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0", "ResNet50")


def _keras_app(name: str, out: Path) -> Path:
    """A keras.applications architecture (weights=None: nothing downloaded; latency does not depend on
    the values) exported to INT8 TFLite: real models that no one here wrote.

    Exported ending in logits (``classifier_activation=None``), as our subnets do: no kernel predictor exists
    for a 1000-way SOFTMAX, and a prediction never counts an op it cannot predict, so with the softmax every
    application's total was withheld (the first run on the Zen 4 host)."""
    import keras

    from exporters.tflite_export import export_tflite_model, release_keras

    kw = {"include_preprocessing": False} if name.startswith("MobileNetV3") else {}
    model = getattr(keras.applications, name)(weights=None, input_shape=(224, 224, 3), classifier_activation=None,
                                              **kw)
    try:
        return Path(export_tflite_model(model, out).path)
    finally:
        release_keras()


def _blocks(it, size: int):
    block = []
    for x in it:
        block.append(x)
        if len(block) == size:
            yield block
            block = []
    if block:
        yield block


QUIET_WAIT_S = 120.0


def evaluate(predictor: Predictor, backend: str, items, out: str | Path, protocol: Protocol | None = None,
             progress=None, budget_s: float | None = None, rounds: int = 3, block: int = 8,
             quiet_rounds: bool = True) -> Path:
    """Export and measure ``items`` end to end, one JSON line per item in ``out`` (resumable).

    One record of a network is not ground truth on a shared VM: on the Xeon, SEQnet@vnni-A0's p10 varied
    with a CV of 11.9% across records 2 s apart (docs/noise). Each network is therefore measured in
    ``rounds`` records spread over time, interleaved within blocks of ``block`` networks, and keeps the
    fastest p10 (``measured_ms``; every round is in ``rounds_ms``). From that noise data, the fastest of 3
    records has a CV of about 4.4%, of 5 about 3.3%. The next block is exported on the other core meanwhile,
    so with 3 rounds an evaluation is still about as fast as its exports.

    Exports share the L3 cache and memory bandwidth with the measured core, and they come and go: on the AMD
    EPYC (Zen 5) calibration set, the round during which the next block was still exporting was up to 17% slower
    than a round after it (mobilew-calib-6: 8.10, 7.96, then 6.69 ms), and the third round was the fastest for 52%
    of the networks. So with ``quiet_rounds`` the first round runs beside the exports and every later round waits
    until the exporter is idle (``quiet_rounds`` in each record says which ones were).
    """
    from exporters.onnx_export import export_onnx
    from exporters.tflite_export import export_tflite

    if rounds < 1 or block < 1:
        raise ValueError(f"rounds and block must be >= 1, got {rounds} and {block}")
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
    todo = [(i, it) for i, it in enumerate(items) if it[0] not in done]
    suffix = ".onnx" if backend == "onnxruntime-cpu" else ".tflite"
    with Profiler(backend, protocol=under_prefetch(protocol or Protocol())) as prof, \
            tempfile.TemporaryDirectory() as tmp:

        def export(job):  # runs in the prefetch thread, on the cores the profiler does not use
            i, (name, space, arch) = job
            path = Path(tmp) / f"m{i}{suffix}"
            if name.startswith("keras:"):
                return _keras_app(name[6:], path)
            net = resolve(space, arch)
            r = net.resolution
            (export_onnx if backend == "onnxruntime-cpu" else export_tflite)(
                net, path, calibration=Calibration((1, 3, r, r), 4))
            return path

        deadline = time.monotonic() + budget_s if budget_s else None
        prefetch = Prefetcher(export, todo, avoid_core=prof.core, depth=block)
        for chunk in _blocks(prefetch, block):
            if deadline is not None and time.monotonic() > deadline:
                break  # resumable: the next run continues with this block
            recs = []
            for (i, (name, space, arch)), path in chunk:
                if name.startswith("keras:"):
                    from .artifact import predict_model

                    rec = {"name": name, "space": None, "arch": None, "flops": None}
                    if not isinstance(path, Exception):
                        g = predict_model(predictor, path)
                        rec.update(warnings=g.warnings,
                                   predicted_ms=g.latency_ms if g.latency_ms is not None else float("nan"))
                else:
                    rec = {"name": name, "space": space, "arch": arch, "flops": resolve(space, arch).flops(),
                           "predicted_ms": _predict_subnet(tables, predictor, space, arch)}
                if isinstance(path, Exception):
                    rec.update(predicted_ms=rec.get("predicted_ms", float("nan")), measured_ms=None, stable=False,
                               ok=False, error=f"export failed: {type(path).__name__}: {path}")
                else:
                    rec.update(rounds_ms=[], stable=False, ok=True, error=None)
                recs.append((i, rec, path))
            for rnd in range(rounds):  # interleaved: records of one network are a block's length apart
                quiet = rnd > 0 and quiet_rounds and prefetch.wait_idle(QUIET_WAIT_S)
                for _, rec, path in recs:
                    if not rec["ok"]:  # export failures are already ok=False
                        continue
                    m = prof.measure(path)
                    if not m.ok:
                        rec.update(ok=False, error=m.error, measured_ms=None)
                        continue
                    rec["rounds_ms"].append(m.latency_ms)
                    rec.setdefault("quiet_rounds", []).append(bool(quiet))
                    rec["stable"] = rec["stable"] or m.stable
            with open(out, "a") as f:
                for i, rec, path in recs:
                    if rec["ok"]:
                        rec["measured_ms"] = min(rec["rounds_ms"])
                    if not isinstance(path, Exception):
                        path.unlink(missing_ok=True)
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
    groups = {"all": recs}
    for kind in SETS:
        rs_k = [r for r in recs if f"-{kind}-" in r["name"]]
        if rs_k:
            groups[kind] = rs_k
            for h in sorted({r["name"].split(f"-{kind}-")[0] for r in rs_k}):
                groups[f"{kind} {h}"] = [r for r in rs_k if r["name"].startswith(f"{h}-{kind}-")]
    groups.update({"SEQnets": [r for r in recs if r["name"].startswith("SEQnet")],
                   "keras.applications": [r for r in recs if r["name"].startswith("keras:")]})
    summary = {g: metrics(np.array([r["measured_ms"] for r in rs]), np.array([r["predicted_ms"] for r in rs]))
               for g, rs in groups.items() if rs}
    spreads = np.array([max(r["rounds_ms"]) / min(r["rounds_ms"]) - 1 for r in recs if len(r.get("rounds_ms") or []) > 1])
    if len(spreads):  # how repeatable the ground truth itself is: a floor under any predictor's error
        summary[NOISE] = {"n": int(len(spreads)), "rounds": int(np.median([len(r["rounds_ms"]) for r in recs
                                                                           if r.get("rounds_ms")])),
                          "spread_median": float(np.median(spreads)), "spread_p90": float(np.percentile(spreads, 90)),
                          "within10": float(np.mean(spreads <= 0.10))}
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for g, marker in (("random", "o"), ("calib", "s"), ("SEQnets", "*"), ("keras.applications", "^")):
        rs = groups.get(g)
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
    (out_dir / "report.md").write_text(report_markdown(summary, title))
    return summary


NOISE = "measurement noise"
PAPER_ACC10 = {"SpaceEvo, VNNI CPU (onnxruntime)": 0.925, "SpaceEvo, Pixel 4 (TFLite)": 1.0,
               "nn-Meter, Pixel 4 CPU (TFLite FP32)": 0.990}


def report_markdown(summary: dict, title: str) -> str:
    """The evaluation as a table, beside the published +-10% accuracies it is compared with."""
    rows = ["| set | n | RMSE (ms) | RMSPE | within ±5% | within ±10% |", "|---|---|---|---|---|---|"]
    for g, m in summary.items():
        if g == NOISE:
            continue
        rows.append(f"| {g} | {m['n']} | {m['rmse_ms']:.3f} | {m['rmspe']:.3f} | {m['acc5']:.1%} | {m['acc10']:.1%} |")
    if NOISE in summary:
        z = summary[NOISE]
        rows += ["", f"Repeatability of the measurements ({z['n']} networks, {z['rounds']} records each, interleaved): "
                 f"(slowest - fastest) / fastest has median {z['spread_median']:.1%} and p90 {z['spread_p90']:.1%}; "
                 f"{z['within10']:.1%} of networks have all their records within 10%."]
    rows += ["", "Published, within ±10%: " + "; ".join(f"{k} {v:.1%}" for k, v in PAPER_ACC10.items()) + "."]
    return f"# {title}\n\n" + "\n".join(rows) + "\n\n![predicted vs measured](scatter.png)\n"


def agreement(first: str | Path, second: str | Path) -> dict:
    """How two measurement runs of the same networks agree: the ceiling of any predictor's accuracy.

    A predictor is judged against measurements; if the same networks, measured again by the same protocol
    some minutes later, agree within +-10% only so often, no predictor can be shown to do better against
    either run. ``drift`` is the median ratio second/first (the machine as a whole got faster or slower);
    ``*_drift_removed`` are the shares after dividing it out."""
    def load(path):
        out = {}
        for line in Path(path).read_text().splitlines():
            r = json.loads(line) if line.strip() else None
            if r and r.get("ok") and r.get("measured_ms"):
                out[r["name"]] = r["measured_ms"]
        return out

    a, b = load(first), load(second)
    names = sorted(set(a) & set(b))
    if len(names) < 2:
        raise ValueError(f"agreement: {first} and {second} share {len(names)} measured networks; at least 2 are needed")
    x = np.array([b[n] / a[n] for n in names])
    drift = float(np.median(x))
    rel, rel_d = x - 1, x / drift - 1
    return {"n": len(names), "drift": drift, "rmspe": float(np.sqrt(np.mean(rel ** 2))),
            "acc5": float(np.mean(np.abs(rel) <= 0.05)), "acc10": float(np.mean(np.abs(rel) <= 0.10)),
            "acc5_drift_removed": float(np.mean(np.abs(rel_d) <= 0.05)),
            "acc10_drift_removed": float(np.mean(np.abs(rel_d) <= 0.10))}


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
