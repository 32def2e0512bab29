"""predictors consensus: a predictor judged against the median of several sessions, each session against the rest."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from predictors.consensus import Consensus, consensus
from predictors.evaluate import eval_set


def _session(path, items, ms: dict[str, float]):
    path.write_text("".join(json.dumps({"name": n, "space": s, "arch": a, "ok": True, "measured_ms": ms[n],
                                        "rounds_ms": [ms[n]], "predicted_ms": 0.0}) + "\n"
                            for n, s, a in items if n in ms))
    return path


def test_the_predictor_is_judged_against_the_sessions_median_and_each_session_against_the_rest(
        tmp_path, all_type_predictor):
    pred = all_type_predictor
    items = eval_set(["onnxw", "mobilew"], 5)  # 10 networks
    from predictors.evaluate import _predict_subnet

    truth = {n: _predict_subnet(pred, s, a) for n, s, a in items}  # the predictor is exact against the truth
    names = list(truth)
    # session a: the truth; b: 3% slow; c: 20% slow on the first 4 networks (a noisy state), lacks the last one
    a = _session(tmp_path / "a.jsonl", items, truth)
    b = _session(tmp_path / "b.jsonl", items, {n: 1.03 * v for n, v in truth.items()})
    c = _session(tmp_path / "c.jsonl", items, {n: (1.2 if i < 4 else 1.0) * truth[n]
                                               for i, n in enumerate(names[:-1])})
    doc, recs = consensus(pred, [a, b, c], min_runs=2)
    assert doc.n_networks == 10 and doc.groups["random"]["n"] == 10
    # the kernel-list path predicts what the layer table (every evaluation's path) predicts
    assert all(r["predicted_ms"] == pytest.approx(truth[r["name"]], rel=1e-9) for r in recs)
    med = {r["name"]: r["measured_ms"] for r in recs}
    assert med[names[0]] == pytest.approx(1.03 * truth[names[0]])  # median of 1.0, 1.03, 1.2
    assert med[names[-1]] == pytest.approx(1.015 * truth[names[-1]])  # two sessions: their mean
    assert doc.groups["random"]["acc10"] == 1.0 and doc.groups["random"]["acc5"] == 1.0
    sa, sb, sc = doc.sessions
    assert (sa.n, sb.n, sc.n) == (10, 10, 9)
    assert sc.acc10 == pytest.approx(5 / 9) and sc.predictor_acc10 == pytest.approx(5 / 9)  # the noisy session
    # a against b and c: where c was slow the others' median is 1.115x the truth, so even the exact session misses
    assert sa.acc10 == pytest.approx(0.6) and sa.acc10_drift_removed == 1.0 and sa.predictor_acc10 == 1.0
    assert sb.acc10 == 1.0 and sb.predictor_acc10 == 1.0 and sb.drift == pytest.approx(1.03)
    # only networks of at least 3 sessions
    doc3, _ = consensus(pred, [a, b, c], min_runs=3)
    assert doc3.n_networks == 9
    Consensus.model_validate_json(doc.model_dump_json())  # the file format round-trips


def test_consensus_skips_another_subnet_under_a_name_and_refuses_bad_input(tmp_path, all_type_predictor):
    pred = all_type_predictor
    items = eval_set(["onnxw"], 3)
    other = eval_set(["mobilew"], 1)[0]
    a = _session(tmp_path / "a.jsonl", items, {n: 5.0 for n, _, _ in items})
    b = _session(tmp_path / "b.jsonl", items[:2] + [(items[2][0], other[1], other[2])],
                 {n: 5.0 for n, _, _ in items})
    doc, _ = consensus(pred, [a, b])
    assert doc.mismatched == 1 and doc.n_networks == 2
    with pytest.raises(ValueError, match="at least 2 sessions"):
        consensus(pred, [a])
    with pytest.raises(ValueError, match="no network was measured by at least 3"):
        consensus(pred, [a, b], min_runs=3)


def test_consensus_cli(tmp_path, all_type_predictor):
    from predictors.__main__ import app

    items = eval_set(["onnxw"], 3)
    (tmp_path / "s1").mkdir()
    a = _session(tmp_path / "s1" / "results.jsonl", items, {n: 5.0 for n, _, _ in items})
    b = _session(tmp_path / "b.jsonl", items, {n: 5.5 for n, _, _ in items})
    out = tmp_path / "cons"
    pred = str(all_type_predictor.save(tmp_path / "predictor"))
    r = CliRunner().invoke(app, ["consensus", pred, str(a), str(b), "--out", str(out)])
    assert r.exit_code == 0, r.output
    doc = Consensus.model_validate_json((out / "consensus.json").read_text())
    assert doc.n_networks == 3 and len((out / "consensus.jsonl").read_text().splitlines()) == 3
    assert (out / "scatter.png").stat().st_size > 1000 and "s1" in r.output
    r = CliRunner().invoke(app, ["consensus", pred, str(a), str(tmp_path / "nope.jsonl"), "--out", str(out)])
    assert r.exit_code == 2 and "nope.jsonl: not found" in r.output
    r = CliRunner().invoke(app, ["consensus", pred, str(a), "--out", str(out)])
    assert r.exit_code == 2 and "at least 2 sessions" in r.output
