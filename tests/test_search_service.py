"""The search CLI against a running service (uvicorn in a thread, bundled predictor): the LUT re-predicted on
the device (`--latency-source service`), `search subnet` with LUT accuracy and a Python callable, the sums
that make a LUT subnet's latency equal the service's prediction, and the clear errors."""
from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from predictors.bundled import bundled_predictors
from search.__main__ import app
from search.client import LatencyClient
from server.app import create_app
from server.config import Settings

SPEC = bundled_predictors("onnxruntime-cpu")[0]
DEVICE = "{1}@{0}".format(*SPEC.split("/"))
runner = CliRunner()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    import uvicorn

    tmp = tmp_path_factory.mktemp("svc")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(Settings(database_url=f"sqlite:///{tmp / 'h.db'}",
                                                               predictor_dir=tmp / "p")),
                                           host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    t.join(10)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One answer cache for the module: the LUT is re-predicted once (the first test checks that it was)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


def test_service_lut_matches_whole_subnet_predictions(service, cache):
    """A LUT subnet whose stage widths chain is a real subnet: its latency from the re-predicted table plus the
    fixed part must equal the service's prediction of that subnet string."""
    from search.lut import load_lut
    from search.service_latency import service_lut
    from search.subnet import LutGenome
    from spaces import SearchSpace

    with LatencyClient(service) as c:
        lut, fixed, src = service_lut(load_lut("onnxw"), c, DEVICE)
        assert not src["cached"] and set(fixed) == {160, 192, 224} and all(0 < v < 1 for v in fixed.values())
        again = service_lut(load_lut("onnxw"), c, DEVICE)[2]
        assert again["cached"]
        space = SearchSpace.parse("onnxw-151122-023231")
        g = LutGenome(lut, space)
        rng = np.random.default_rng(0)
        checked = 0
        for _ in range(4000):  # find rows whose widths chain (each row's input = the previous row's output)
            r = int(rng.choice([160, 192, 224]))
            rows, prev = [], None
            for t in g.tables:
                a, b = t.slices[r]
                ok = [i for i in range(a, b) if prev is None or int(t.input_shape[i].split("x")[1]) == prev]
                if not ok:
                    break
                i = ok[int(rng.integers(len(ok)))]
                rows.append(i)
                prev = int(t.stage_arch[i].split("_")[-1].split("#")[1])
            if len(rows) < 6:
                continue
            genome = (r, *rows)
            table_ms = fixed[r] + sum(float(t.pred_int8_ms[i]) for t, i in zip(g.tables, rows))
            whole = c.predict(DEVICE, str(space), [g.string(genome)])[0]
            assert table_ms == pytest.approx(whole, rel=1e-5)
            checked += 1
            if checked == 3:
                break
        assert checked == 3


def test_search_space_with_service_source(service, cache, tmp_path):
    r = runner.invoke(app, ["space", "--latency-source", "service", "--service", service, "--device", DEVICE,
                            "--population", "20", "--sample", "5", "--spaces", "60", "--samples", "5000",
                            "--top-k", "20", "--out", str(tmp_path / "o"), "--no-progress", "--no-random-baseline"])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "o" / "space_search.json").read_text())
    assert doc["source"]["latency_source"] == "service" and doc["source"]["device"] == DEVICE
    assert doc["evolution"]["best"]["space"].startswith("onnxw-")


@pytest.mark.parametrize("args, needle", [
    (["--device", DEVICE, "--service", "http://127.0.0.1:9"], "not reachable"),
    (["--device", "nope"], "is not known; known:"),
    (["--device", DEVICE, "--constraints", "0.5,10"], "smallest latency reachable"),
    ([], "--device"),
])
def test_search_space_service_errors(service, cache, tmp_path, args, needle):
    base = ["space", "--latency-source", "service", "--out", str(tmp_path / "o"), "--no-progress"]
    if "--service" not in args:
        base += ["--service", service]
    r = runner.invoke(app, base + args)
    assert r.exit_code == 2 and needle in r.output, r.output


def test_search_subnet_lut_accuracy(service, cache, tmp_path):
    out = tmp_path / "sub"
    args = ["subnet", "--space", "onnxw-151122-023231", "--device", DEVICE, "--service", service,
            "--constraints", "10,15", "--population", "16", "--iterations", "5", "--out", str(out), "--no-progress"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "subnet_search.json").read_text())
    assert (out / "subnet_search.png").stat().st_size > 0
    with LatencyClient(service) as c:
        for res in doc["per_constraint"]:
            b = res["best"]
            assert b["latency_ms"] <= res["constraint_ms"]
            assert c.predict(DEVICE, "onnxw-151122-023231", [b["subnet"]])[0] == pytest.approx(b["latency_ms"])
    lats = [p["latency_ms"] for p in doc["pareto"]]
    accs = [p["accuracy"] for p in doc["pareto"]]
    assert lats == sorted(lats) and accs == sorted(accs)
    r2 = runner.invoke(app, args[:-3] + ["--out", str(tmp_path / "sub2"), "--no-progress"])
    doc2 = json.loads((tmp_path / "sub2" / "subnet_search.json").read_text())
    assert doc2["per_constraint"] == doc["per_constraint"]  # same seed, same inputs: same result
    low = runner.invoke(app, ["subnet", "--space", "onnxw-151122-023231", "--device", DEVICE, "--service", service,
                              "--constraints", "0.1", "--out", str(tmp_path / "x"), "--no-progress"])
    assert low.exit_code == 2 and "smallest subnet" in low.output


def fake_accuracy(space: str, subnets: list[str]) -> list[float]:
    """A stand-in for a trained supernet: bigger is more accurate (for the callable accuracy source)."""
    from spaces import resolve

    return [resolve(space, s).flops() / 1e9 for s in subnets]


def test_search_subnet_callable_accuracy(service, cache, tmp_path):
    r = runner.invoke(app, ["subnet", "--space", "onnxw-151122-023231", "--device", DEVICE, "--service", service,
                            "--constraints", "12", "--population", "12", "--iterations", "3",
                            "--accuracy", "tests.test_search_service:fake_accuracy", "--out", str(tmp_path / "c"),
                            "--no-progress"])
    assert r.exit_code == 0, r.output
    best = json.loads((tmp_path / "c" / "subnet_search.json").read_text())["per_constraint"][0]["best"]
    assert best["latency_ms"] <= 12 and best["accuracy"] > 0
    bad = runner.invoke(app, ["subnet", "--space", "onnxw-151122-023231", "--device", DEVICE, "--service", service,
                              "--accuracy", "nomodule", "--out", str(tmp_path / "d")])
    assert bad.exit_code == 2 and "module:function" in bad.output


@pytest.mark.slow
def test_search_subnet_export_and_measure_on_this_host(tmp_path, monkeypatch):
    """The whole loop on this host (about 4 minutes): a service with a local agent profiles the host (5 kernels
    per type), trains its predictor, then `search subnet --export onnx --measure` writes INT8 models and measures
    them through the job queue; predicted and measured latencies are reported side by side."""
    from profilers.fingerprint import device_slug, local_fingerprint
    from tests.test_service_e2e import Service

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    svc = Service(tmp_path, f"sqlite:///{tmp_path / 'hil.db'}")
    svc.env["HIL_AUTO_PROFILE"], svc.env["HIL_PROFILE_PER_TYPE"], svc.env["HIL_SERVE_BUNDLED"] = "1", "5", "0"
    try:
        svc.start_server()
        svc.start_agent(svc.token("agent", "a1"), "a1")
        device = f"onnxruntime-cpu@{device_slug(local_fingerprint('onnxruntime-cpu'))}"
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            d = svc.http.get(f"/devices/{device}")
            if d.status_code == 200 and d.json()["predictor"]:
                break
            time.sleep(2)
        assert svc.http.get(f"/devices/{device}").json()["predictor"]["version"] == 1
        out = tmp_path / "sub"
        monkeypatch.setenv("HIL_TOKEN", "e2e-admin-token")
        r = runner.invoke(app, ["subnet", "--space", "onnxw-151122-023231", "--device", device, "--service", svc.url,
                                "--constraints", "12", "--population", "12", "--iterations", "3", "--margin", "0.1",
                                "--export", "onnx", "--measure", "--out", str(out), "--no-progress"])
        assert r.exit_code == 0, r.output
        exp = json.loads((out / "subnet_search.json").read_text())["exported"]
        assert len(exp) == 1 and exp[0]["measured_ms"] > 0 and (out / "models" / "T12ms.int8.onnx").is_file()
        assert "predicted" in r.output and "measured" in r.output
    finally:
        svc.close()
