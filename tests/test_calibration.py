"""Model-level calibration (predictors.calibration): fit, storage, and every prediction path using it."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from exporters.kernel_models import KernelConfig
from predictors.artifact import Predictor, predict_kernel_list
from predictors.calibration import fit
from spaces import SearchSpace, resolve


SCALE = {"dwconv-bn-relu6": 1.3, "dwconv-bn-swish": 0.8}  # the synthetic "in-network" truth
FIXED = 0.2


def test_fit_recovers_known_scales():
    rng = np.random.default_rng(0)
    X = np.c_[rng.uniform(0.5, 5, (80, 4)), rng.uniform(0, 0.05, 80), rng.integers(40, 120, 80), np.ones(80)]
    beta = np.array([1.3, 0.8, 1.0, 2.0, 1.0, 0.004, 0.3])
    est, lam, cv = fit(X, X @ beta, ["a", "b", "c", "d"])
    assert np.allclose(est[:4], beta[:4], rtol=0.01) and est[-1] == pytest.approx(0.3, abs=0.02)
    assert est[-2] == pytest.approx(0.004, abs=3e-4)
    assert cv["calibrated_out_of_fold"]["acc10"] == 1.0 and cv["raw"]["acc10"] < 0.5
    with pytest.raises(ValueError, match="at least 10 are needed"):
        fit(X[:6], (X @ beta)[:6], ["a", "b", "c", "d"])


def _truth(pred: Predictor, net) -> float:
    cfgs = [KernelConfig.from_kernel(k) for k in net.kernels()]
    lat, _ = pred.predict_kernels(cfgs, calibrated=False)
    return float(sum(v * SCALE.get(c.type, 1.0) for c, v in zip(cfgs, lat))) + FIXED


def _held_out_errors(truth, *predictors: Predictor) -> list[float]:
    """Per predictor, the largest relative error over 10 held-out networks (evaluation set: other seeds)."""
    from predictors.evaluate import eval_set

    worst = [0.0] * len(predictors)
    for _, space, arch in eval_set(["onnxw", "mobilew"], 5):
        net = resolve(space, arch)
        y = truth(net)
        cfgs = [KernelConfig.from_kernel(k) for k in net.kernels()]
        worst = [max(w, abs(predict_kernel_list(p, cfgs).latency_ms / y - 1)) for w, p in zip(worst, predictors)]
    return worst


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, all_type_predictor):
    """A predictor, the calibration set measured as the synthetic truth, and the calibrated predictor."""
    from predictors.__main__ import app
    from predictors.evaluate import eval_set

    tmp = tmp_path_factory.mktemp("cal")
    pred = all_type_predictor
    raw_dir = pred.save(tmp / "raw")
    lines = []
    for name, space, arch in eval_set(["onnxw", "mobilew"], 20, kind="calib"):
        lines.append(json.dumps({"name": name, "space": space, "arch": arch, "ok": True,
                                 "measured_ms": _truth(pred, resolve(space, arch)), "predicted_ms": 0.0}))
    results = tmp / "calib" / "results.jsonl"
    results.parent.mkdir()
    results.write_text("\n".join(lines) + "\n")
    r = CliRunner().invoke(app, ["calibrate", str(raw_dir), "--results", str(results), "--out", str(tmp / "cal")])
    assert r.exit_code == 0, r.output
    return pred, Predictor.load(tmp / "cal"), tmp, results


def test_calibration_is_stored_and_predicts_held_out_networks(calibrated):
    raw, cal, tmp, _ = calibrated
    meta = json.loads((tmp / "cal" / "metadata.json").read_text())
    assert meta["format"] == "hil-predictor/3" and meta["calibration"]["n_models"] == 40
    assert meta["calibration"]["data"]["sha256"]
    c = cal.meta.calibration
    # the kernel types' sums are nearly collinear across networks, so a scale is only loosely identified (the
    # ridge pulls it toward 1); what must hold is its direction and the accuracy on networks not fitted
    assert c.scales["dwconv-bn-relu6"] > 1.1 and c.scales["dwconv-bn-swish"] < 0.9
    err_cal, err_raw = _held_out_errors(lambda net: _truth(raw, net), cal, raw)
    assert err_cal < 0.03 < err_raw


def test_batch_table_uses_the_calibration(calibrated):
    from predictors.batch import EncodedSubnets, LayerTable

    _, cal, _, _ = calibrated
    sp = SearchSpace.parse("onnxw-151122-023231")
    enc = EncodedSubnets.random(sp, 30, seed=4)
    fast = LayerTable(sp, cal).predict(enc)
    for j in range(0, 30, 6):
        cfgs = [KernelConfig.from_kernel(k) for k in resolve(sp, enc.subnet(j)).kernels()]
        assert fast[j] == pytest.approx(predict_kernel_list(cal, cfgs).latency_ms, rel=1e-9)


def test_calibration_and_evaluation_sets_are_disjoint_and_misuse_is_refused(calibrated, tmp_path):
    from predictors.__main__ import app
    from predictors.evaluate import eval_set

    _, _, tmp, results = calibrated
    ev = eval_set(["onnxw", "mobilew"], 50)
    cal = eval_set(["onnxw", "mobilew"], 50, kind="calib")
    assert not {(s, a) for _, s, a in ev} & {(s, a) for _, s, a in cal}
    assert all("-random-" in n for n, _, _ in ev) and all("-calib-" in n for n, _, _ in cal)
    bad = tmp_path / "results.jsonl"
    bad.write_text(results.read_text().replace("-calib-", "-random-"))
    r = CliRunner().invoke(app, ["calibrate", str(tmp / "raw"), "--results", str(bad)])
    assert r.exit_code == 2 and "use --set calib" in r.output
    r = CliRunner().invoke(app, ["eval", str(tmp / "raw"), "--backend", "onnxruntime-cpu", "--set", "train",
                                 "--out", str(tmp_path)])
    assert r.exit_code == 2 and "allowed: random, calib, calib-small" in r.output


def test_runs_of_the_calibration_set_are_pooled_by_their_fastest_record(calibrated, tmp_path):
    """A second session measured the same networks with the whole machine 10% faster (one network failed):
    pooled, every network keeps its fastest record and the fit follows the faster state."""
    from predictors.__main__ import app
    from predictors.evaluate import pool_results

    raw, _, tmp, results = calibrated
    first = [json.loads(l) for l in results.read_text().splitlines()]
    second = [dict(r, measured_ms=r["measured_ms"] * 0.9, rounds_ms=[r["measured_ms"] * 0.9]) for r in first]
    second[0] = dict(second[0], ok=False, measured_ms=None, error="the runtime crashed (signal SIGABRT)")
    run2 = tmp_path / "run2.jsonl"
    run2.write_text("".join(json.dumps(r) + "\n" for r in second))
    pooled = pool_results([results, run2])
    assert pooled[first[0]["name"]]["measured_ms"] == first[0]["measured_ms"] and pooled[first[0]["name"]]["runs"] == 1
    assert all(pooled[r["name"]]["measured_ms"] == pytest.approx(r["measured_ms"] * 0.9) for r in first[1:])
    assert all(pooled[r["name"]]["runs"] == 2 for r in first[1:])
    r = CliRunner().invoke(app, ["calibrate", str(tmp / "raw"), "--results", str(results), "--results", str(run2),
                                 "--out", str(tmp_path / "pooled")])
    assert r.exit_code == 0, r.output
    c = Predictor.load(tmp_path / "pooled").meta.calibration
    assert [d["path"] for d in c.data["runs"]] == [str(results), str(run2)] and c.n_models == len(first)
    net = resolve(first[5]["space"], first[5]["arch"])
    cfgs = [KernelConfig.from_kernel(k) for k in net.kernels()]
    assert predict_kernel_list(Predictor.load(tmp_path / "pooled"), cfgs).latency_ms == \
        pytest.approx(first[5]["measured_ms"] * 0.9, rel=0.05)
    r = CliRunner().invoke(app, ["calibrate", str(tmp / "raw"), "--results", str(results), "--results",
                                 str(tmp_path / "nowhere.jsonl")])
    assert r.exit_code == 2 and "nowhere.jsonl not found" in r.output


def test_the_small_calibration_set_is_small_disjoint_and_reported_apart():
    """calib-small exists because a calibration set drawn like the evaluation set had too few small networks to
    separate a per-kernel cost from the scales (Zen 4: 6 of 80 under 6 ms). Its subnets must come from the lower
    MACs range, share nothing with the other sets, and not be counted as the "calib" set in a report."""
    from predictors.evaluate import SMALL_QUANTILE, _groups, eval_set
    from spaces import resolve
    from spaces.flops import network_macs

    small = eval_set(["onnxw", "mobilew"], 20, kind="calib-small")
    assert small == eval_set(["onnxw", "mobilew"], 20, kind="calib-small")  # reproducible: resumable runs
    calib = eval_set(["onnxw", "mobilew"], 60, kind="calib")
    ev = eval_set(["onnxw", "mobilew"], 60)
    assert [n for n, _, _ in small[:2]] == ["onnxw-calib-small-0", "mobilew-calib-small-0"]
    pairs = {(s, a) for _, s, a in small}
    assert len(pairs) == 40 and not pairs & {(s, a) for _, s, a in calib + ev}
    for hs in ("onnxw", "mobilew"):
        macs = lambda items: np.array([network_macs(resolve(s, a)) for n, s, a in items if n.startswith(hs + "-")])
        m_small, m_calib = macs(small), macs(calib)
        # below the calibration distribution's lower third (an estimate from other draws: allow its sampling error)
        assert np.median(m_small) < np.quantile(m_calib, SMALL_QUANTILE)
        assert np.max(m_small) < np.quantile(m_calib, 0.5)
    recs = [{"name": n} for n, _, _ in calib[:4] + small[:6]]
    g = _groups(recs)
    assert len(g["calib"]) == 4 and len(g["calib-small"]) == 6 and len(g["calib-small mobilew"]) == 3


# Results files written by the first Zen 3 session (`--n 15`, before eval_set's fixed layout): their mobilew names
# hold other subnets. Kept as they were measured; `agreement` and resuming compare subnets, not only names.
OLD_LAYOUT = {"docs/eval/amd-epyc-avx2/onnxruntime-cpu-first/results.jsonl",
              "docs/eval/amd-epyc-avx2/onnxruntime-cpu-overhead/results.jsonl",
              "docs/eval/amd-epyc-zen4-vnni/onnxruntime-cpu-20261204-old-layout/results.jsonl"}


def test_a_set_name_means_one_subnet_whatever_n_and_hyperspaces_were_asked():
    """Before the fixed layout, `--n 75` drew other mobilew networks than `--n 300` under the same names (the
    stream was shared in the order asked), and a Zen 4 re-check compared them with another session's by name."""
    from predictors.evaluate import CHUNK, eval_set

    for kind in ("random", "calib"):
        full = {n: (s, a) for n, s, a in eval_set(["onnxw", "mobilew"], CHUNK[kind] + 5, kind=kind)}
        assert len(full) == 2 * (CHUNK[kind] + 5) and len(set(full.values())) == len(full)
        for hs, n in ((["onnxw", "mobilew"], 7), (["mobilew"], 3), (["mobilew", "onnxw"], CHUNK[kind])):
            part = eval_set(hs, n, kind=kind)
            assert len(part) == n * len(hs) and all(full[name] == (s, a) for name, s, a in part)
    small = eval_set(["mobilew"], 2, kind="calib-small")
    assert small == [r for r in eval_set(["onnxw", "mobilew"], 15, kind="calib-small") if r[0] in
                     {"mobilew-calib-small-0", "mobilew-calib-small-1"}]
    with pytest.raises(ValueError, match="allowed: onnxw, mobilew"):
        eval_set(["onnxw", "resnet"], 2)
    # --start: the networks after the first START of each hyperspace, under the same names as a longer set's
    fresh = eval_set(["onnxw", "mobilew"], 4, kind="random", start=CHUNK["random"] + 1)
    assert [n for n, _, _ in fresh[:2]] == [f"onnxw-random-{CHUNK['random'] + 1}", f"mobilew-random-{CHUNK['random'] + 1}"]
    longer = {n: (s, a) for n, s, a in eval_set(["onnxw", "mobilew"], CHUNK["random"] + 5)}
    assert len(fresh) == 8 and all(longer[name] == (s, a) for name, s, a in fresh)
    assert eval_set(["mobilew"], 3, kind="calib-small", start=1) == eval_set(["mobilew"], 4, kind="calib-small")[1:]
    with pytest.raises(ValueError, match="start: -1 is not allowed"):
        eval_set(["onnxw"], 2, start=-1)


def test_committed_measurements_keep_their_subnets():
    """Every committed evaluation and calibration record names the subnet eval_set gives that name now: the
    bundled eval.json files and the sessions compared by `agreement` rest on it."""
    import re
    from pathlib import Path

    from predictors.evaluate import eval_set

    root = Path(__file__).resolve().parents[1]
    pat = re.compile(r"^(onnxw|mobilew)-(random|calib-small|calib)-(\d+)$")
    recs: dict[str, dict[str, set]] = {}
    for f in sorted(root.glob("docs/eval/**/results.jsonl")) + sorted(root.glob("data/networks/**/results.jsonl")):
        if str(f.relative_to(root)) in OLD_LAYOUT:
            continue
        for line in f.read_text().splitlines():
            r = json.loads(line)
            if m := pat.match(r["name"]):
                recs.setdefault(m.group(2), {}).setdefault(r["name"], set()).add((r["space"], r["arch"]))
    assert set(recs) == {"random", "calib", "calib-small"}
    for kind, names in recs.items():
        n = max(int(pat.match(k).group(3)) for k in names) + 1
        now = {name: (s, a) for name, s, a in eval_set(["onnxw", "mobilew"], n, kind=kind)}
        wrong = [name for name, subnets in names.items() if subnets != {now[name]}]
        assert not wrong, f"{kind}: {len(wrong)} names hold another subnet, e.g. {wrong[:3]}"


def test_resuming_into_a_file_with_another_subnet_under_a_name_is_refused(tmp_path):
    from predictors.evaluate import ResultsClash, agreement, eval_set, evaluate

    items = eval_set(["onnxw", "mobilew"], 2)
    other = eval_set(["onnxw", "mobilew"], 3)[-1]  # mobilew-random-2
    out = tmp_path / "results.jsonl"
    rec = lambda name, space, arch, ms: json.dumps({"name": name, "space": space, "arch": arch, "ok": True,  # noqa: E731
                                                   "measured_ms": ms, "predicted_ms": ms, "rounds_ms": [ms]}) + "\n"
    out.write_text(rec(items[1][0], other[1], other[2], 5.0))
    with pytest.raises(ResultsClash, match="mobilew-random-0.*another --out"):
        evaluate(None, "onnxruntime-cpu", items, out)
    # agreement compares only the names that hold the same subnet in both files
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("".join(rec(*it, 10.0) for it in items))
    second.write_text("".join(rec(*it, 10.5) for it in items[:3]) + rec(items[3][0], other[1], other[2], 20.0))
    ag = agreement(first, second)
    assert ag["n"] == 3 and ag["acc10"] == 1.0


def test_a_stopped_evaluation_keeps_every_round_it_measured(tmp_path):
    """Rounds go to results.rounds.jsonl as they are measured; a resumed run measures only the rounds a network
    lacks, ignores rounds of another subnet under a name, and removes the file once every block is written."""
    from predictors.evaluate import evaluate, eval_set, load_partial_rounds, partial_rounds_path
    from profilers.protocol import Protocol

    fast = Protocol(budget_s=0.5, min_duration_s=0.2)
    items = eval_set(["onnxw"], 2, seed=1, kind="calib-small")
    out = tmp_path / "results.jsonl"
    rounds = partial_rounds_path(out)
    assert rounds == tmp_path / "results.rounds.jsonl"

    def stop(*_):
        raise KeyboardInterrupt  # a stop right after the first block was written

    with pytest.raises(KeyboardInterrupt):
        evaluate(None, "onnxruntime-cpu", items, out, protocol=fast, rounds=2, block=1, progress=stop)
    first = json.loads(out.read_text())
    left = load_partial_rounds(rounds, set(items))
    assert first["name"] == items[0][0] and [r["ms"] for r in left[items[0][0]]] == first["rounds_ms"]
    assert set(left) == {items[0][0]}  # the second block was never started
    # a stop inside the second block: one of its rounds measured, plus a round of another subnet under its name
    name, space, arch = items[1]
    round_ = {"name": name, "space": space, "arch": arch, "ms": 0.0123, "quiet": False, "probe_ms": 0.3, "stable": True}
    with open(rounds, "a") as f:
        f.write(json.dumps(round_) + "\n" + json.dumps(dict(round_, arch="d1#other", ms=0.0001)) + "\n{torn")
    evaluate(None, "onnxruntime-cpu", items, out, protocol=fast, rounds=2, block=1)
    second = [json.loads(line) for line in out.read_text().splitlines()][1]
    assert second["name"] == name and second["ok"] and len(second["rounds_ms"]) == 2
    assert second["rounds_ms"][0] == 0.0123 and second["measured_ms"] == 0.0123 and second["probe_ms"][0] == 0.3
    assert not rounds.exists()


def test_eval_cli_names_an_unknown_hyperspace(tmp_path, all_type_predictor):
    from predictors.__main__ import app

    path = all_type_predictor.save(tmp_path / "p")
    r = CliRunner().invoke(app, ["eval", str(path), "--backend", "onnxruntime-cpu", "--hyperspaces", "onnxw,resnet",
                                 "--n", "2", "--out", str(tmp_path / "ev")])
    assert r.exit_code == 2 and "resnet" in r.output and "allowed: onnxw, mobilew" in r.output


# --- session calibration: refit a global scale g and the per-kernel cost d on top of a calibration -------------
def test_session_fit_recovers_a_scale_and_a_per_kernel_cost():
    from predictors.calibration import fit_session

    rng = np.random.default_rng(1)
    B, n = rng.uniform(3, 25, 12), rng.integers(60, 200, 12).astype(float)
    y = 0.95 * B + 0.0015 * n
    g, d, lam, cv = fit_session(B, n, y, d0=0.004)
    assert g == pytest.approx(0.95, abs=0.01) and d == pytest.approx(0.0015, abs=3e-4)
    assert cv["session_leave_one_out"]["rmspe"] < 0.01 < cv["base"]["rmspe"]
    # noise: leave-one-out picks a ridge, the estimate stays between the base and the truth's neighbourhood
    y_noisy = y * rng.normal(1, 0.03, 12)
    g2, d2, _, cv2 = fit_session(B, n, y_noisy, d0=0.004)
    assert 0.85 < g2 < 1.05 and 0 <= d2 <= 0.05
    with pytest.raises(ValueError, match="at least 5 are needed"):
        fit_session(B[:4], n[:4], y[:4], 0.0)


def _session_truth(pred: Predictor, net, g=0.9, d=0.003) -> float:
    """Another machine state: the calibrated truth a tenth faster, each kernel paying 3 µs more."""
    return g * _truth(pred, net) + d * len(list(net.kernels()))


def _measure_session(pred: Predictor, path, n: int = 6, **kw):
    from predictors.evaluate import eval_set

    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"name": name, "space": s, "arch": a, "ok": True,
                         "measured_ms": _session_truth(pred, resolve(s, a), **kw), "predicted_ms": 0.0,
                         "probe_ms": [0.33], "measured_at": f"2026-12-05T00:0{i % 10}:00+00:00"})
             for i, (name, s, a) in enumerate(eval_set(["onnxw", "mobilew"], n, kind="calib-small"))]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_session_calibration_follows_the_session_and_keeps_its_base(calibrated, tmp_path):
    from predictors.__main__ import app
    from predictors.evaluate import eval_set

    raw, cal, tmp, _ = calibrated
    base = cal.meta.calibration
    ses = _measure_session(raw, tmp_path / "s" / "results.jsonl")
    r = CliRunner().invoke(app, ["calibrate", str(tmp / "cal"), "--session", "--results", str(ses),
                                 "--out", str(tmp_path / "ses")])
    assert r.exit_code == 0, r.output
    assert "global scale g" in r.output and "per kernel d" in r.output
    p = Predictor.load(tmp_path / "ses")
    c = p.meta.calibration
    s = c.session
    assert s.n_models == 12 and s.base == base and s.probe_ms == pytest.approx(0.33) and c.probe_ref_ms == s.probe_ms
    assert s.measured_from.startswith("2026-12-05T00:00") and s.data["sha256"]
    assert s.cv["session_leave_one_out"]["rmspe"] < s.cv["base"]["rmspe"]
    # folded into the ordinary fields: the per-type scales keep their ratios, only g and d moved
    assert c.scales["dwconv-bn-swish"] / c.scales["dwconv-bn-relu6"] == pytest.approx(
        base.scales["dwconv-bn-swish"] / base.scales["dwconv-bn-relu6"])
    err_ses, err_base = _held_out_errors(lambda net: _session_truth(raw, net), p, cal)  # in the session's state
    assert err_ses < 0.04 < err_base
    # a reader that knows nothing of sessions (the field ignored) predicts the same numbers
    meta = json.loads((tmp_path / "ses" / "metadata.json").read_text())
    del meta["calibration"]["session"]
    (tmp_path / "ses" / "metadata.json").write_text(json.dumps(meta))
    cfgs = [KernelConfig.from_kernel(k) for k in resolve(*eval_set(["onnxw"], 1)[0][1:]).kernels()]
    assert predict_kernel_list(Predictor.load(tmp_path / "ses"), cfgs).latency_ms == \
        predict_kernel_list(p, cfgs).latency_ms
    # a second session refits from the base, never from the first session: the same data gives the same fit
    r = CliRunner().invoke(app, ["calibrate", str(tmp_path / "ses2-src"), "--session", "--results", str(ses), "--out",
                                 str(tmp_path / "x")])
    assert r.exit_code == 2 and "ses2-src" in r.output
    p.save(tmp_path / "again-src")
    r = CliRunner().invoke(app, ["calibrate", str(tmp_path / "again-src"), "--session", "--results", str(ses),
                                 "--out", str(tmp_path / "again")])
    assert r.exit_code == 0, r.output
    c2 = Predictor.load(tmp_path / "again").meta.calibration
    assert c2.session.base == base and c2.scales == pytest.approx(c.scales) and c2.per_kernel_ms == pytest.approx(
        c.per_kernel_ms)


def test_session_calibration_of_a_plain_sum_and_its_refusals(calibrated, tmp_path):
    from predictors.__main__ import app

    raw, _, tmp, _ = calibrated
    ses = _measure_session(raw, tmp_path / "s" / "results.jsonl")
    r = CliRunner().invoke(app, ["calibrate", str(tmp / "raw"), "--session", "--results", str(ses),
                                 "--out", str(tmp_path / "plain")])
    assert r.exit_code == 0, r.output
    c = Predictor.load(tmp_path / "plain").meta.calibration
    assert c.session.base.method.startswith("none") and c.session.base.fixed_ms == raw.meta.overhead_ms
    few = _measure_session(raw, tmp_path / "few" / "results.jsonl", n=2)
    r = CliRunner().invoke(app, ["calibrate", str(tmp / "cal"), "--session", "--results", str(few), "--out",
                                 str(tmp_path / "x")])
    assert r.exit_code == 2 and "4 measured networks; at least 5 are needed" in r.output
    bad = tmp_path / "random.jsonl"
    bad.write_text(ses.read_text().replace("-calib-small-", "-random-"))
    r = CliRunner().invoke(app, ["calibrate", str(tmp / "cal"), "--session", "--results", str(bad)])
    assert r.exit_code == 2 and "evaluation networks" in r.output
    r = CliRunner().invoke(app, ["calibrate", str(tmp / "cal"), "--session", "--results", str(tmp_path / "no.jsonl")])
    assert r.exit_code == 2 and "--set calib-small" in r.output
    r = CliRunner().invoke(app, ["calibrate", str(tmp / "cal"), "--session", "--results", str(ses)])
    assert r.exit_code == 2 and "--out: needed with --session" in r.output
    lines = ses.read_text().splitlines()
    swapped = tmp_path / "swapped.jsonl"  # a calib-small name holding another subnet (its neighbour's arch)
    swapped.write_text("\n".join([json.dumps(dict(json.loads(lines[0]), arch=json.loads(lines[2])["arch"])),
                                   *lines[1:]]) + "\n")
    r = CliRunner().invoke(app, ["calibrate", str(tmp / "cal"), "--session", "--results", str(swapped), "--out",
                                 str(tmp_path / "x")])
    assert r.exit_code == 2 and "onnxw-calib-small-0" in r.output and "another subnet" in r.output


def test_a_session_far_from_its_base_is_fitted_at_a_bound_and_says_so(calibrated, tmp_path):
    """Another machine (everything 3x faster) is not a state of this one: g stops at its bound with a warning."""
    from predictors.calibration import session_calibrate

    raw, cal, _, _ = calibrated
    ses = _measure_session(raw, tmp_path / "s" / "results.jsonl", g=0.3, d=0.0)
    c = session_calibrate(cal, ses)
    assert c.session.scale == pytest.approx(0.5) and "reached a bound" in c.session.warnings[0]
    assert not session_calibrate(cal, _measure_session(raw, tmp_path / "t" / "results.jsonl")).session.warnings


def _online_records(pred: Predictor, n: int = 12, block: int = 4, minutes: float = 2.0, switch: int = 12) -> list[dict]:
    """Held-out networks measured in blocks, ``minutes`` apart; from network ``switch`` on, the machine is in the
    session state of :func:`_session_truth` (a tenth faster, 3 µs more per kernel)."""
    from datetime import datetime, timedelta, timezone

    from predictors.evaluate import eval_set

    t0 = datetime(2026, 12, 5, 18, 0, tzinfo=timezone.utc)
    recs = []
    for i, (name, s, a) in enumerate(eval_set(["onnxw", "mobilew"], n)):
        net = resolve(s, a)
        y = _session_truth(pred, net) if i >= switch else _truth(pred, net)
        recs.append({"name": name, "space": s, "arch": a, "ok": True, "measured_ms": y, "predicted_ms": 0.0,
                     "measured_at": (t0 + timedelta(minutes=minutes * (i // block))).isoformat()})
    return recs


def test_online_calibration_predicts_each_network_from_those_measured_before_it(calibrated):
    from predictors.online import OnlineSettings, online_predict

    raw, cal, _, _ = calibrated
    recs = _online_records(raw)
    on = online_predict(cal, recs, OnlineSettings(window=8, max_age_min=30))
    # a block is fitted on earlier blocks only (never on itself), at most the window's networks
    assert [r["online"]["n_models"] for r in on] == [0] * 8 + [8] * 16
    # too few earlier networks: the base calibration's prediction, the same number every other path gives
    for r in on[:8]:
        cfgs = [KernelConfig.from_kernel(k) for k in resolve(r["space"], r["arch"]).kernels()]
        assert r["predicted_ms"] == pytest.approx(predict_kernel_list(cal, cfgs).latency_ms, rel=1e-9)
    err = [abs(r["predicted_ms"] / r["measured_ms"] - 1) for r in on]
    base_err = [abs(predict_kernel_list(cal, [KernelConfig.from_kernel(k) for k in resolve(r["space"], r["arch"])
                                             .kernels()]).latency_ms / r["measured_ms"] - 1) for r in recs]
    # once the window holds only the new state, it is followed; the base calibration stays a tenth off
    assert max(err[20:]) < 0.02 and min(base_err[20:]) > 0.05
    assert on[20]["online"]["scale"] == pytest.approx(0.9, abs=0.03)
    # the records are replayed in the order measured, whatever order the file has
    shuffled = online_predict(cal, recs[::-1], OnlineSettings(window=8, max_age_min=30))[::-1]
    assert [r["predicted_ms"] for r in shuffled] == pytest.approx([r["predicted_ms"] for r in on])
    # nothing older than max_age is fitted: blocks 2 hours apart each get the base prediction
    far = online_predict(cal, _online_records(raw, minutes=120), OnlineSettings(window=8, max_age_min=30))
    assert {r["online"]["n_models"] for r in far} == {0}
    # a record from before evaluations kept the time: the base prediction, not fitted; a bad time is refused
    untimed = online_predict(cal, [dict(recs[0], measured_at=None)] + recs[1:], OnlineSettings(window=8))
    assert untimed[0]["online"] == {"n_models": 0, "untimed": True} and untimed[0]["predicted_ms"] == pytest.approx(
        on[0]["predicted_ms"]) and [r["online"]["n_models"] for r in untimed[4:13]] == [0] * 4 + [7] * 4 + [8]
    with pytest.raises(ValueError, match="not an ISO time"):
        online_predict(cal, [dict(recs[0], measured_at="yesterday")])


def test_eval_repredicts_and_replays_a_results_file(calibrated, tmp_path):
    from predictors.__main__ import app

    raw, cal, tmp, _ = calibrated
    results = tmp_path / "results.jsonl"
    # a killed run leaves a torn last line: replay skips it, as the report does
    results.write_text("".join(json.dumps(r) + "\n" for r in _online_records(raw)) + '{"name": "torn')
    args = ["eval", str(tmp / "cal"), "--backend", "onnxruntime-cpu", "--out", str(tmp_path / "o")]
    r = CliRunner().invoke(app, args + ["--online", "16"])
    assert r.exit_code == 2 and "--repredict" in r.output
    r = CliRunner().invoke(app, args + ["--repredict", str(results), "--online", "2"])
    assert r.exit_code == 2 and "--online" in r.output and "window" in r.output
    r = CliRunner().invoke(app, args + ["--repredict", str(results), "--online", "8"])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["random"]["n"] == 24 and "online: refit on the last 8 networks within 30 min" in \
        (tmp_path / "o" / "report.md").read_text()
    assert all("online" in json.loads(line) for line in (tmp_path / "o" / "results.jsonl").read_text().splitlines())
    # without --online, re-predicting the same file (torn line and all) keeps every record and fits nothing online
    plain = tmp_path / "plain"
    r = CliRunner().invoke(app, ["eval", str(tmp / "cal"), "--backend", "onnxruntime-cpu", "--out", str(plain),
                                 "--repredict", str(results)])
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in (plain / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 24 and all("online" not in x for x in recs)
    assert json.loads((plain / "summary.json").read_text())["random"]["n"] == 24
    # one session of a file that holds several: by measured_at (blocks of 4, 2 minutes apart from 18:00 UTC)
    win = tmp_path / "win"
    r = CliRunner().invoke(app, ["eval", str(tmp / "cal"), "--backend", "onnxruntime-cpu", "--out", str(win),
                                 "--repredict", str(results), "--measured-from", "2026-12-05T18:04",
                                 "--measured-to", "2026-12-05T18:08:00+00:00"])
    assert r.exit_code == 0, r.output
    assert json.loads((win / "summary.json").read_text())["random"]["n"] == 8
    assert "networks measured 2026-12-05T18:04 to 2026-12-05T18:08:00+00:00 UTC" in (win / "report.md").read_text()
    # the selection is an intermediate: the report folder holds the report alone
    assert sorted(f.name for f in win.iterdir()) == ["report.md", "results.jsonl", "scatter.png", "summary.json"]
    for bad, said in ((["--measured-from", "yesterday"], "ISO 8601"),
                      (["--measured-from", "2026-12-05T18:08", "--measured-to", "2026-12-05T18:04"], "not after"),
                      (["--measured-from", "2026-12-06T00:00"], "no network")):
        r = CliRunner().invoke(app, ["eval", str(tmp / "cal"), "--backend", "onnxruntime-cpu", "--out", str(win),
                                     "--repredict", str(results), *bad])
        assert r.exit_code == 2 and said in r.output, r.output
    r = CliRunner().invoke(app, args + ["--measured-from", "2026-12-05T18:04"])
    assert r.exit_code == 2 and "--repredict" in r.output
