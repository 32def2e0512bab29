"""SpaceEvo search-space evolution: LUT loading, Q-T score, aging evolution and the `search space` CLI.

Fast (seconds): the real LUT is read once per session from the shared data folder; searches use small
budgets and few samples.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from search.__main__ import app
from search.lut import LUT_RESOLUTIONS, LutError, expected_files, load_lut, lut_file_name, resolution_of
from search.qt_score import (LutEvaluator, QTSettings, latency_penalty, qt_score, reference_qt_score,
                             sample_subnets)
from search.space_evo import (EvolutionSettings, aging_evolution, make_children, random_search, rng_streams)
from spaces import ONNXW, SearchSpace
from spaces.sampling import random_space

from .conftest import SHARED_DATA

LUT_ROOT = SHARED_DATA / "spaceevo_block_lut"
ZERO = {r: 0.0 for r in LUT_RESOLUTIONS}
PAPER_CONSTRAINTS = (8.0, 10.0, 15.0, 20.0, 25.0)


@pytest.fixture(scope="module")
def lut():
    if not (LUT_ROOT / "onnxw").is_dir():
        pytest.fail(f"block LUT not found at {LUT_ROOT}; set HIL_SHARED_DATA to the shared data folder")
    return load_lut("onnxw", LUT_ROOT)


def small_evaluator(lut, n=2000, top_k=20, seed=0, fixed=ZERO) -> LutEvaluator:
    return LutEvaluator(lut, QTSettings(PAPER_CONSTRAINTS, n, top_k), fixed, seed)


# --- LUT ---------------------------------------------------------------------------------------------------
def test_lut_loads_every_candidate_with_rows_grouped_by_resolution(lut):
    assert len(lut.tables) == len(expected_files(ONNXW)) == 132
    t = lut.table(3, 5, 2)
    assert len(t) == 1000 and t.nsr_loss.dtype == np.float32
    for r in LUT_RESOLUTIONS:
        rows = t.rows_at(r)
        assert rows.stop > rows.start
        assert (t.resolution[rows] == r).all()
        # the README's rule: H * 2^n is the input resolution
        assert all(resolution_of(int(s.split("x")[2])) == r for s in t.input_shape[rows])
    assert sum(t.slices[r][1] - t.slices[r][0] for r in LUT_RESOLUTIONS) == len(t)


def test_mobilew_lut_loads_by_alias():
    m = load_lut("pixel4", LUT_ROOT)
    assert m.hyperspace.name == "mobilew" and len(m.tables) == 210
    assert 0 < m.min_reachable_ms(ZERO)[0] < 8


def test_min_reachable_latency_is_per_resolution_sum_of_stage_minima(lut):
    ms, res = lut.min_reachable_ms(ZERO)
    brute = {}
    for r in LUT_RESOLUTIONS:
        brute[r] = sum(min(float(t.pred_int8_ms[t.resolution == r].min()) for (s, _, _), t in lut.tables.items()
                           if s == stage) for stage in range(1, 7))
    assert res == min(brute, key=brute.get) and ms == pytest.approx(brute[res], rel=1e-6)
    assert lut.min_reachable_ms({r: 1.5 for r in LUT_RESOLUTIONS})[0] == pytest.approx(ms + 1.5, rel=1e-6)


def _fake_lut(folder: Path, hs=ONNXW) -> None:
    """One row per resolution for every candidate of the hyperspace: enough to load."""
    folder.mkdir(parents=True)
    for s, b, w in expected_files(hs):
        hw = [r // {1: 2, 2: 4, 3: 8, 4: 16, 5: 16, 6: 32}[s] for r in LUT_RESOLUTIONS]
        lines = [f"3#32#4_3#32#4,1x16x{h}x{h},{0.3 + 0.01 * b},1.0,0.1,{0.5 + 0.1 * w}" for h in hw]
        (folder / lut_file_name(s, b, w)).write_text("\n".join(lines) + "\n")


def test_missing_lut_folder_names_it(tmp_path):
    with pytest.raises(LutError, match=r"does not exist.*stage\{S\}_\{BLOCK\}_\{WINDOW\}\.csv"):
        load_lut("onnxw", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LutError, match="neither a onnxw/ subfolder"):
        load_lut("onnxw", tmp_path / "empty")


def test_missing_stage_file_is_named(tmp_path):
    _fake_lut(tmp_path / "onnxw")
    assert len(load_lut("onnxw", tmp_path).tables) == 132  # root with onnxw/ inside ...
    assert len(load_lut("vnni", tmp_path / "onnxw").tables) == 132  # ... or the folder itself
    (tmp_path / "onnxw" / "stage4_2_1.csv").unlink()
    with pytest.raises(LutError, match=r"lacks 1 of the 132 stage tables of hyperspace onnxw: stage4_2_1\.csv"):
        load_lut("onnxw", tmp_path)


def test_malformed_row_names_file_line_and_field(tmp_path):
    _fake_lut(tmp_path / "onnxw")
    f = tmp_path / "onnxw" / "stage2_1_0.csv"
    lines = f.read_text().splitlines()
    lines[1] = lines[1].replace(",0.3", ",-0.3", 1)  # negative NSR loss
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(LutError, match=r"stage2_1_0\.csv:2: field 'nsr_loss'"):
        load_lut("onnxw", tmp_path)
    f.write_text("3#32#4,1x16x40x40,0.3\n")
    with pytest.raises(LutError, match=r"stage2_1_0\.csv:1: 3 fields; expected 6"):
        load_lut("onnxw", tmp_path)


# --- Q-T score ---------------------------------------------------------------------------------------------
def test_penalty_formula():
    assert latency_penalty(0.5) == 1.0 and latency_penalty(0.1) == 1.0  # >= t: no penalty
    assert latency_penalty(0.001) == pytest.approx(100 ** 0.01)
    assert latency_penalty(0.01, t=0.1, a=0.5) == pytest.approx(10 ** 0.5)
    assert latency_penalty(1e-5) > latency_penalty(1e-3) > 1.0  # fewer samples under T -> larger penalty


def test_sampler_matches_a_brute_force_reconstruction(lut):
    space = SearchSpace.parse("onnxw-151122-023231")
    tables = lut.space_tables(space)
    fixed = {160: 0.5, 192: 0.75, 224: 1.0}
    s = sample_subnets(tables, fixed, 600, np.random.default_rng(3), LUT_RESOLUTIONS, keep_rows=True)
    assert set(np.unique(s.resolution)) == set(LUT_RESOLUTIONS)
    for i in range(0, 600, 7):
        r = int(s.resolution[i])
        rows = s.rows[i]
        assert all(t.resolution[row] == r for t, row in zip(tables, rows))  # stage rows match the resolution
        lat = fixed[r] + sum(float(t.pred_int8_ms[row]) for t, row in zip(tables, rows))
        loss = sum(float(t.nsr_loss[row]) for t, row in zip(tables, rows))
        assert s.latency_ms[i] == pytest.approx(lat, rel=1e-5) and s.loss[i] == pytest.approx(loss, rel=1e-5)
    # keep_rows does not change what is drawn
    s2 = sample_subnets(tables, fixed, 600, np.random.default_rng(3), LUT_RESOLUTIONS)
    assert np.array_equal(s.latency_ms, s2.latency_ms) and np.array_equal(s.loss, s2.loss)


@pytest.mark.parametrize("top_k", [1, 20, 5000])
def test_qt_score_matches_the_reference_loop(lut, top_k):
    ev = small_evaluator(lut, n=1500, top_k=top_k)
    for text in ("onnxw-151122-023231", "onnxw-333333-000000", "onnxw-555555-133333"):
        space = SearchSpace.parse(text)
        s = ev.samples(space)
        got = qt_score(s, ev.settings)
        assert got.score == pytest.approx(reference_qt_score(s.latency_ms, s.loss, ev.settings), rel=1e-6)
        for c in got.per_constraint:
            assert c.n_under == int((s.latency_ms <= c.constraint_ms).sum())
            assert c.score == (0.0 if c.n_under == 0 else pytest.approx(1 / (c.mean_top_loss * c.penalty)))


def test_no_sample_under_a_constraint_scores_zero(lut):
    ev = LutEvaluator(lut, QTSettings((2.5, 15.0), 500, 10), ZERO, 0)
    q = ev.evaluate(SearchSpace.parse("onnxw-555555-133333"))  # widest FusedMB: far above 2.5 ms
    low, high = q.per_constraint
    assert low.n_under == 0 and low.score == 0.0 and low.mean_top_loss is None
    assert low.penalty == pytest.approx((0.1 / 1e-5) ** 0.01)
    assert q.score == high.score
    json.dumps(q.to_json(), allow_nan=False)


def test_score_is_a_function_of_seed_and_space_only(lut):
    a, b = small_evaluator(lut, seed=1), small_evaluator(lut, seed=1)
    spaces = [random_space(ONNXW, i) for i in range(6)]
    assert [a(s) for s in spaces] == [b(s) for s in reversed(spaces)][::-1]  # order does not matter
    assert a(spaces[0]) != small_evaluator(lut, seed=2)(spaces[0])
    assert len(a.cache) == 6


# --- evolution -----------------------------------------------------------------------------------------
def test_children_differ_from_parent_in_exactly_the_mutated_stage():
    rng = random.Random(0)
    for i in range(200):
        parent = random_space(ONNXW, i)
        stage, c1, c2 = make_children(parent, rng)
        assert c1.windows == parent.windows and c2.blocks == parent.blocks
        assert [k for k in range(6) if c1.blocks[k] != parent.blocks[k]] == [stage]
        assert [k for k in range(6) if c2.windows[k] != parent.windows[k]] == [stage]


def test_random_initial_population_covers_blocks_and_windows():
    trace = aging_evolution(ONNXW, lambda s: 0.0, EvolutionSettings(population=60, sample=10, spaces=60, seed=4))
    spaces = [SearchSpace.parse(s) for s, _ in trace.history]
    assert len(set(s.to_string() for s in spaces)) == 60
    for stage in range(6):
        assert len({s.blocks[stage] for s in spaces}) >= 5  # not pinned like the reference's 121222
        assert len({s.windows[stage] for s in spaces}) >= 2


def test_evolution_improves_over_its_initial_population(lut):
    ev = small_evaluator(lut, n=1000, top_k=10)
    cfg = EvolutionSettings(population=40, sample=10, spaces=240, seed=0, snapshot_every=40)
    trace = aging_evolution(ONNXW, ev, cfg)
    assert trace.evaluated == 240 and trace.stopped_early is None
    initial = sorted(v for _, v in trace.history[:40])
    later = sorted(v for _, v in trace.history[-40:])
    assert trace.best_so_far[-1] > trace.best_so_far[39]
    assert np.mean(later) > np.mean(initial)  # the aging population moved up, not just one lucky child
    assert all(a <= b for a, b in zip(trace.best_so_far, trace.best_so_far[1:]))
    assert [s["evaluated"] for s in trace.snapshots] == [40, 80, 120, 160, 200, 240]
    assert all(len(s["top"]) == 10 for s in trace.snapshots)


def test_search_is_deterministic_for_a_seed(lut):
    cfg = EvolutionSettings(population=20, sample=5, spaces=60, seed=7, snapshot_every=20)
    runs = [aging_evolution(ONNXW, small_evaluator(lut, n=400, seed=7), cfg) for _ in range(2)]
    assert runs[0].to_json() == runs[1].to_json()
    other = aging_evolution(ONNXW, small_evaluator(lut, n=400, seed=7), EvolutionSettings(20, 5, 60, seed=8))
    assert other.history != runs[0].history
    rnd = [random_search(ONNXW, small_evaluator(lut, n=400, seed=7), cfg) for _ in range(2)]
    assert rnd[0].to_json() == rnd[1].to_json() and rnd[0].evaluated == 60
    evo_rng, rnd_rng = rng_streams(7)
    assert evo_rng.random() != rnd_rng.random()


# --- CLI -------------------------------------------------------------------------------------------------
runner = CliRunner()
SMALL = ["space", "--lut-dir", str(LUT_ROOT), "--population", "20", "--sample", "5", "--spaces", "50",
         "--samples", "500", "--top-k", "10", "--no-progress"]


def test_cli_rejects_constraints_below_the_smallest_reachable_latency(lut):
    min_ms, _ = lut.min_reachable_ms(ZERO)
    r = runner.invoke(app, [*SMALL, "--constraints", "1,10"])
    assert r.exit_code == 2
    assert "--constraints" in r.output and "smallest latency reachable" in r.output
    assert f"{min_ms:.3f} ms" in r.output
    r = runner.invoke(app, [*SMALL, "--constraints", "3", "--fixed-ms", "1.5"])  # the fixed part counts
    assert r.exit_code == 2 and f"{min_ms + 1.5:.3f} ms" in r.output


@pytest.mark.parametrize("args, option, words", [
    (["--hyperspace", "resnet"], "--hyperspace", ["onnxw", "mobilew", "vnni", "pixel4"]),
    (["--sample", "30"], "--sample", ["1..20"]),
    (["--spaces", "5"], "--spaces", [">= 20"]),
    (["--constraints", "8,x"], "--constraints", ["8,10,15,20,25"]),
    (["--constraints", "-4"], "--constraints", ["positive"]),
    (["--top-k", "0"], "--top-k", ["1..500"]),
    (["--fixed-ms", "160=1"], "--fixed-ms", ["160=MS,192=MS,224=MS"]),
    (["--lut-dir", "/nonexistent/lut"], "--lut-dir", ["does not exist"]),
    (["--latency-source", "service"], "--device", ["GET /devices"]),
])
def test_cli_names_the_bad_option(args, option, words, monkeypatch):
    monkeypatch.delenv("HIL_SERVICE_URL", raising=False)
    r = runner.invoke(app, [*SMALL, *args])
    assert r.exit_code == 2, r.output
    assert option in r.output
    for w in words:
        assert w in r.output


def test_cli_rejects_unknown_latency_source():
    r = runner.invoke(app, [*SMALL, "--latency-source", "oracle"])
    assert r.exit_code == 2 and "lut" in r.output and "service" in r.output


def test_cli_space_run_writes_json_and_plot_and_repeats(tmp_path):
    outs = []
    for name in ("a", "b"):
        r = runner.invoke(app, [*SMALL, "--seed", "3", "--out", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
        assert (tmp_path / name / "space_search.png").stat().st_size > 1000
        d = json.loads((tmp_path / name / "space_search.json").read_text())
        d.pop("timing")
        outs.append(d)
    assert outs[0] == outs[1]
    d = outs[0]
    assert d["settings"]["seed"] == 3 and d["settings"]["constraints"] == list(PAPER_CONSTRAINTS)
    assert d["source"]["fixed_part_ms"] == {"160": 0.0, "192": 0.0, "224": 0.0}
    assert d["evolution"]["evaluated"] == 50 and d["random"]["evaluated"] == 50
    best = d["evolution"]["best"]
    assert best["space"] == d["evolution"]["best_space"] and len(best["per_constraint"]) == 5
    assert best["score"] == pytest.approx(max(v for _, v in d["evolution"]["history"]))
    sub = best["best_subnets"][-1]["subnets"][0]
    assert sub["latency_ms"] <= 25 and len(sub["stage_archs"]) == 6
