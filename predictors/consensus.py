"""A predictor judged against the consensus of several sessions' measurements of the same networks.

Why: on a shared VM one session's measurement of a small network reproduces in another session only so often
(on the Zen 4 host, 88-98% within +-10% for networks under 10 ms, README "Accuracy so far"), so a predictor judged
against one session cannot score higher than that session agrees with itself, whatever the predictor. The
consensus of several sessions, each network's median over the sessions that measured it (each session's value
being its fastest record, as in :func:`predictors.evaluate.evaluate`), is a better estimate of the latency a
user will see, and separates the predictor's error from the single session's:

* ``predictor``: the predictor against the consensus (networks measured in at least ``min_runs`` sessions);
* ``sessions``: each session against the consensus of the *other* sessions (leave one out), beside the
  predictor against that session's own measurement: where the two shares are close, the predictor is as close
  to that session as another session's measurement is.

Nothing here divides out a session's speed in the headline: a predictor must also be right about the machine's
usual speed. ``drift`` per session (its median ratio to the others' consensus) says how fast each session's VM
ran, and ``acc10_drift_removed`` is given beside it for comparison with ``predictors agreement``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from .artifact import Predictor
from .evaluate import PLOT_SETS, _groups, _metrics, load_results, predict_subnets


class SessionFigures(BaseModel):
    """One session against the others' consensus, and the predictor against that session."""

    results: str
    n: int = Field(description="networks this session shares with at least one other session")
    drift: float | None = Field(description="median of this session / the others' consensus: the VM's speed that "
                                            "session (None: it shares no network with the others)")
    acc10: float | None = Field(description="share of networks within +-10% of the others' consensus")
    acc10_drift_removed: float | None
    predictor_acc10: float | None = Field(description="the predictor within +-10% of this session's measurement, same networks")


class Consensus(BaseModel):
    """What ``python -m predictors consensus`` writes (consensus.json)."""

    predictor: str
    results: list[str]
    min_runs: int
    n_networks: int
    runs_median: float = Field(description="median number of sessions that measured a network")
    mismatched: int = Field(description="names skipped because a session holds another subnet under them")
    unpredicted: list[str] = Field(description="networks left out: a kernel type the predictor has no forest for")
    groups: dict[str, dict] = Field(description="the predictor against the consensus, per set (RMSE, RMSPE, "
                                                "+-5%, +-10%, n), as in an evaluation's summary.json")
    sessions: list[SessionFigures]


def _measured(path: Path) -> dict[str, dict]:
    return {n: r for n, r in load_results(path).items() if r.get("ok") and r.get("measured_ms") and r.get("space")}


def consensus(predictor: Predictor, results: list[str | Path], min_runs: int = 2,
              label: str = "") -> tuple[Consensus, list[dict]]:
    """The predictor against the median of the sessions (``results``: evaluations' results.jsonl, one per session).

    A network's subnet is the first session's that names it; a session that holds another subnet under that name
    (a file from before :func:`predictors.evaluate.eval_set`'s fixed layout) is skipped for it and counted in
    ``mismatched``. Returns the figures and, per network, a record with ``measured_ms`` = the consensus,
    ``runs_ms`` = each session's value and ``predicted_ms`` (what the plot shows)."""
    if min_runs < 1:
        raise ValueError(f"min_runs: {min_runs} is not allowed; allowed: 1 or more")
    if len(results) < 2:
        raise ValueError(f"results: {len(results)} given; a consensus needs at least 2 sessions' results.jsonl")
    runs = [_measured(Path(p)) for p in results]
    first: dict[str, dict] = {}
    values: dict[str, list[float | None]] = {}
    mismatched = 0
    for i, run in enumerate(runs):
        for name, r in run.items():
            ref = first.setdefault(name, r)
            if (ref["space"], ref["arch"]) != (r["space"], r["arch"]):
                mismatched += 1
                continue
            values.setdefault(name, [None] * len(runs))[i] = r["measured_ms"]
    names = [n for n, v in values.items() if sum(x is not None for x in v) >= min_runs]
    if not names:
        raise ValueError(f"results: no network was measured by at least {min_runs} of the {len(results)} sessions")
    predicted = predict_subnets(predictor, {n: (first[n]["space"], first[n]["arch"]) for n in values})
    unpredicted = sorted(n for n in names if not np.isfinite(predicted[n]))
    names = [n for n in names if np.isfinite(predicted[n])]
    if not names:
        raise ValueError(f"predictor: predicts none of the {len(unpredicted)} networks (kernel types it lacks)")
    recs = []
    for n in names:
        got = [x for x in values[n] if x is not None]
        recs.append({"name": n, "space": first[n]["space"], "arch": first[n]["arch"], "ok": True,
                     "measured_ms": float(np.median(got)), "runs_ms": values[n], "predicted_ms": predicted[n]})
    groups = {g: _metrics(rs) for g, rs in _groups(recs).items()}
    sessions = []
    for i, path in enumerate(results):
        own, others, pred = [], [], []
        for n, v in values.items():
            rest = [x for j, x in enumerate(v) if j != i and x is not None]
            if v[i] is None or not rest or not np.isfinite(predicted[n]):
                continue
            own.append(v[i])
            others.append(float(np.median(rest)))
            pred.append(predicted[n])
        if not own:
            sessions.append(SessionFigures(results=str(path), n=0, drift=None, acc10=None, acc10_drift_removed=None,
                                           predictor_acc10=None))
            continue
        ratio = np.array(own) / np.array(others)
        drift = float(np.median(ratio))
        sessions.append(SessionFigures(
            results=str(path), n=len(own), drift=drift, acc10=float(np.mean(np.abs(ratio - 1) <= 0.10)),
            acc10_drift_removed=float(np.mean(np.abs(ratio / drift - 1) <= 0.10)),
            predictor_acc10=float(np.mean(np.abs(np.array(pred) / np.array(own) - 1) <= 0.10))))
    doc = Consensus(predictor=label, results=[str(p) for p in results], min_runs=min_runs, n_networks=len(recs),
                    runs_median=float(np.median([sum(x is not None for x in r["runs_ms"]) for r in recs])),
                    mismatched=mismatched, unpredicted=unpredicted, groups=groups, sessions=sessions)
    return doc, recs


def plot(recs: list[dict], out: Path, title: str) -> None:
    """Predicted vs consensus, each network's horizontal bar spanning the sessions' values (scatter.png)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    groups = _groups(recs)  # the sets as a report names them
    shown = [(g, marker, groups[g]) for g, marker in PLOT_SETS if g in groups]
    in_a_set = {id(r) for _, _, rs in shown for r in rs}
    other = [r for r in recs if id(r) not in in_a_set]  # a name in no set is still drawn
    for group, marker, rs in shown + ([("other", "x", other)] if other else []):
        x = np.array([r["measured_ms"] for r in rs])
        lo = np.array([min(v for v in r["runs_ms"] if v is not None) for r in rs])
        hi = np.array([max(v for v in r["runs_ms"] if v is not None) for r in rs])
        y = np.array([r["predicted_ms"] for r in rs])
        ax.errorbar(x, y, xerr=[x - lo, hi - x], fmt=marker, ms=3 if marker != "*" else 8, lw=0.5, alpha=0.6,
                    label=f"{group} ({len(rs)}): bar = sessions' range")
    both = [r["measured_ms"] for r in recs] + [r["predicted_ms"] for r in recs]
    line = np.geomspace(0.85 * min(both), 1.15 * max(both), 50)  # log axes: small networks are most of a set
    ax.plot(line, line, "k-", lw=0.8)
    ax.fill_between(line, 0.9 * line, 1.1 * line, color="grey", alpha=0.15, label="+-10%")
    ax.set_xlabel("consensus INT8 latency: median of the sessions (ms)")
    ax.set_ylabel("predicted (ms)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlim(line[0], line[-1])
    ax.set_ylim(line[0], line[-1])
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=8, wrap=True)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "scatter.png", dpi=80)
    plt.close(fig)
