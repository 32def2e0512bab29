"""The HTTP API in process (TestClient): contract, auth, validation messages, jobs through the API, metrics,
predictor hot swap. Processes, kills and restarts are in test_service_e2e.py."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from exporters.kernel_models import KernelConfig, export_kernel
from predictors.bundled import BUNDLED, bundled_predictors
from profilers.fingerprint import local_fingerprint
from server.app import create_app
from server.auth import create_token
from server.config import Settings
from spaces.sampling import sample_subnet

SPACE = "onnxw-151122-023231"
ADMIN = "test-admin-token"
BUNDLED_SPEC = bundled_predictors("onnxruntime-cpu")[0]  # these tests send ONNX models (a tflite one may sort first)
BUNDLED_DEVICE = "{1}@{0}".format(*BUNDLED_SPEC.split("/"))


@pytest.fixture
def client(db_url, tmp_path):
    app = create_app(Settings(database_url=db_url, predictor_dir=tmp_path / "preds", admin_token=ADMIN,
                              max_body_bytes=2 << 20))
    with TestClient(app) as c:
        c.app_state = app.state.hil
        yield c


def _tok(client, role: str, name: str | None = None) -> dict:
    with client.app_state.sessions() as s:
        return {"Authorization": f"Bearer {create_token(s, name or role + '-' + str(time.time_ns()), role)}"}


@pytest.fixture(scope="module")
def conv_onnx(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("m") / "conv.onnx"
    export_kernel(KernelConfig(type="conv-bn-relu", hw=28, cin=32, cout=32, kernel=3), "onnx", path)
    return path.read_bytes()


def test_health_devices_and_bundled_predictor(client):
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["predictors"] >= 1
    names = [d["name"] for d in client.get("/devices").json()]
    assert BUNDLED_DEVICE in names
    d = client.get(f"/devices/{BUNDLED_DEVICE}").json()
    assert d["source"] in ("bundled", "agent") and d["predictor"]["version"] == 0
    assert client.get("/devices/nope").status_code == 404
    assert "openapi" in client.get("/openapi.json").json()


def test_predict_batch_matches_in_process_and_detail(client):
    from predictors.artifact import Predictor
    from predictors.batch import LayerTable
    from server.registry import encode_strings
    from spaces import SearchSpace

    archs = [str(sample_subnet(SPACE, "random", i)) for i in range(50)]
    r = client.post("/predict_latency", json={"device": BUNDLED_DEVICE, "space": SPACE, "archs": archs})
    assert r.status_code == 200, r.text
    body = r.json()
    sp = SearchSpace.parse(SPACE)
    expect = LayerTable(sp, Predictor.load(BUNDLED / BUNDLED_SPEC)).predict(encode_strings(sp, archs))
    assert body["latencies_ms"] == pytest.approx(expect.tolist(), rel=1e-12)
    assert body["predictor"]["version"] == 0 and "kernel_rmspe_median" in body["predictor"]["accuracy"]
    r = client.post("/predict_latency", json={"device": BUNDLED_DEVICE, "space": SPACE, "archs": archs[:2],
                                              "detail": True}).json()
    assert r["latencies_ms"] == pytest.approx(expect[:2].tolist(), rel=1e-9)
    assert len(r["kernels"]) == 2 and all(k["latency_ms"] > 0 for k in r["kernels"][0])


@pytest.mark.parametrize("body, status, needle", [
    ({"device": "nope", "archs": ["x"]}, 404, "device: 'nope' is not known"),
    ({"device": BUNDLED_DEVICE, "archs": ["d1_k3"]}, 422, "archs[0]: space"),
    ({"device": BUNDLED_DEVICE, "space": SPACE, "archs": ["d1_k3"]}, 422, "archs[0]: arch"),
    ({"device": BUNDLED_DEVICE, "space": "onnxw-9", "archs": ["d1_k3"]}, 422, "space"),
    ({"device": BUNDLED_DEVICE, "archs": [{"hyperspace": "onnxw"}]}, 422, "archs[0]: layers JSON"),
    ({"device": BUNDLED_DEVICE, "archs": [5]}, 422, "archs"),
    ({"device": BUNDLED_DEVICE, "archs": []}, 422, "archs"),
    ({"device": BUNDLED_DEVICE, "archs": ["x"], "bogus": 1}, 422, "bogus"),
    ({"device": 3, "archs": ["x"]}, 422, "device"),
])
def test_predict_bad_input_names_the_field(client, body, status, needle):
    r = client.post("/predict_latency", json=body)
    assert r.status_code == status, r.text
    assert needle in r.text


def test_bad_arch_in_a_batch_is_located(client):
    archs = [str(sample_subnet(SPACE, "random", i)) for i in range(5)]
    archs[3] = archs[3].replace("_r", "_r1", 1)
    r = client.post("/predict_latency", json={"device": BUNDLED_DEVICE, "space": SPACE, "archs": archs})
    assert r.status_code == 422 and r.json()["field"] == "archs[3]" and "allowed: 160, 176" in r.json()["detail"]


def test_oversized_body_and_too_many_archs(client):
    big = {"device": BUNDLED_DEVICE, "space": SPACE, "archs": ["x" * 1000] * 3000}
    r = client.post("/predict_latency", json=big)
    assert r.status_code == 413 and "HIL_MAX_BODY_BYTES" in r.text
    client.app_state.settings.max_archs = 10
    r = client.post("/predict_latency", json={"device": BUNDLED_DEVICE, "space": SPACE, "archs": ["x"] * 11})
    assert r.status_code == 422 and "at most 10" in r.text


def test_predict_onnx_model_and_garbage(client, conv_onnx):
    url = f"/predict_latency/onnx?device={BUNDLED_DEVICE}"
    r = client.post(url, content=conv_onnx, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    assert r.json()["latency_ms"] > 0 and [k["type"] for k in r.json()["kernels"]] == ["conv-bn-relu"]
    for junk in (b"garbage", b"", b"\x00" * 64):
        r = client.post(url, content=junk, headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 422 and "body" in str(r.json()["detail"]), r.text
    r = client.post(f"/predict_latency/tflite?device={BUNDLED_DEVICE}", content=conv_onnx)
    assert r.status_code == 422 and "takes onnx models" in r.text


def test_predict_model_flags_a_kernel_beyond_the_training_data(client, tmp_path):
    path = tmp_path / "wide.onnx"  # a 640x640 map: over twice any input our hyperspaces (or their kernels) have
    export_kernel(KernelConfig(type="conv-bn-relu", hw=640, cin=16, cout=16, kernel=3), "onnx", path)
    r = client.post(f"/predict_latency/onnx?device={BUNDLED_DEVICE}", content=path.read_bytes())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["latency_ms"] > 0 and body["warnings"] == []
    assert len(body["extrapolated"]) == 1 and body["extrapolated"][0].startswith("conv-bn-relu_hw640")
    assert "hw 640, trained " in body["extrapolated"][0]


def test_predict_onnx_unsupported_op_is_reported_not_zero(client, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Erf", ["y"], ["z"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8, 4, 4])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    r = client.post(f"/predict_latency/onnx?device={BUNDLED_DEVICE}", content=model.SerializeToString())
    assert r.status_code == 200, r.text
    assert r.json()["latency_ms"] is None and any("Erf" in w for w in r.json()["warnings"])


def test_auth_roles(client, conv_onnx):
    up = {"content": conv_onnx, "params": {"format": "onnx"}}
    r = client.post("/models", **up)
    assert r.status_code == 401 and "bearer token" in r.text
    assert client.post("/models", headers={"Authorization": "Bearer nope"}, **up).status_code == 401
    agent = _tok(client, "agent")
    r = client.post("/models", headers=agent, **up)
    assert r.status_code == 403 and "role agent" in r.text
    cl = _tok(client, "client", "c1")
    assert client.post("/models", headers=cl, **up).status_code == 200
    assert client.post("/models", headers={"Authorization": f"Bearer {ADMIN}"}, **up).status_code == 200
    from server.auth import revoke_token

    with client.app_state.sessions() as s:
        assert revoke_token(s, "c1")
    assert client.post("/models", headers=cl, **up).status_code == 401
    client.app_state.settings.open_reads = False
    assert client.get("/devices").status_code == 401
    assert client.get("/devices", headers=agent).status_code == 200


def test_jobs_through_the_api(client, conv_onnx):
    agent, cl = _tok(client, "agent"), _tok(client, "client")
    fp = local_fingerprint("onnxruntime-cpu").model_dump()
    reg = client.post("/agents/register", headers=agent, json={"backend": "onnxruntime-cpu", "device": "lab-cpu",
                                                               "fingerprint": fp, "hostname": "h"})
    assert reg.status_code == 200, reg.text
    aid = reg.json()["agent_id"]
    bad = client.post("/agents/register", headers=agent, json={"backend": "tflite-cpu", "device": "lab-cpu",
                                                               "fingerprint": {**fp, "backend": "tflite-cpu"},
                                                               "hostname": "h"})
    assert bad.status_code == 409 and "another --device" in bad.text
    sha = client.post("/models", headers=cl, params={"format": "onnx"}, content=conv_onnx).json()["sha256"]
    assert client.post("/jobs", headers=cl, json={"device": "nope", "model_sha256": sha}).status_code == 404
    r = client.post("/jobs", headers=cl, json={"device": "lab-cpu", "model_sha256": "0" * 64})
    assert r.status_code == 422 and "upload it" in r.text
    job = client.post("/jobs", headers=cl, json={"device": "lab-cpu", "model_sha256": sha}).json()
    assert job["state"] == "queued" and job["model_url"] == f"/models/{sha}"
    leased = client.post("/jobs/lease", headers=agent, json={"agent_id": aid, "wait_s": 0}).json()
    assert leased["id"] == job["id"] and leased["state"] == "leased"
    assert client.get(f"/models/{sha}").content == conv_onnx
    assert client.post("/jobs/lease", headers=agent, json={"agent_id": aid, "wait_s": 0}).status_code == 204
    assert client.post(f"/agents/{aid}/heartbeat", headers=agent).json()["leases"] == 1
    res = {"agent_id": aid, "ok": True, "latency_ms": 1.5, "stable": True, "record": {"latency_ms": 1.5}}
    assert client.post(f"/jobs/{job['id']}/result", headers=agent, json=res).json()["status"] == "stored"
    assert client.post(f"/jobs/{job['id']}/result", headers=agent, json=res).json()["status"] == "duplicate"
    done = client.get(f"/jobs/{job['id']}").json()
    assert done["state"] == "done" and done["result"]["latency_ms"] == 1.5
    d = client.get("/devices/lab-cpu").json()
    assert d["jobs"]["done"] == 1 and d["agents_online"] == 1
    r = client.post("/predict_latency", json={"device": "lab-cpu", "archs": ["x"]})
    assert r.status_code == 409 and "no predictor yet" in r.text
    assert client.post("/agents/unknown/heartbeat", headers=agent).status_code == 404
    metrics = client.get("/metrics").text
    assert 'hil_jobs{device="lab-cpu",state="done"} 1.0' in metrics
    assert "hil_http_request_duration_seconds_bucket" in metrics and "hil_agent_heartbeat_age_seconds" in metrics


def test_predictor_hot_swap_keeps_serving(client, tmp_path):
    import shutil
    import threading

    src = BUNDLED / BUNDLED_SPEC
    dst = tmp_path / "v1"
    shutil.copytree(src, dst)
    archs = [str(sample_subnet(SPACE, "random", i)) for i in range(20)]
    versions, errors = [], []

    def ask():
        for _ in range(30):
            r = client.post("/predict_latency", json={"device": BUNDLED_DEVICE, "space": SPACE, "archs": archs})
            (versions if r.status_code == 200 else errors).append(r.json()["predictor"]["version"]
                                                                  if r.status_code == 200 else r.text)

    t = threading.Thread(target=ask)
    t.start()
    time.sleep(0.05)
    client.app_state.registry.install(BUNDLED_DEVICE, 1, dst, time.time())
    t.join()
    assert not errors
    assert versions[-1] == 1 and set(versions) <= {0, 1}


def test_small_batch_path_equals_batch_path():
    """Single strings take a scalar path (predict_small); it must give the vectorized path's numbers exactly."""
    from server.registry import Registry, encode_strings, parse_space, predict_small

    loaded = Registry().install("d", 0, BUNDLED / BUNDLED_SPEC, 0.0)
    for space in (SPACE, "mobilew-654321-012320", "onnxw-543210-012320"):
        sp = parse_space(space)
        table = loaded.table(sp)
        archs = [str(sample_subnet(space, "random", i)) for i in range(200)]
        assert predict_small(table, sp, archs) == table.predict(encode_strings(sp, archs)).tolist()


def test_stage_predictions_add_up_to_the_subnet(client):
    """/predict_latency/stages (what a search-space search re-predicts a lookup table with): the stages of a
    subnet plus the head, plus the model's fixed costs once, give the whole subnet's prediction."""
    from search.service_latency import stage_items
    from spaces import SearchSpace, resolve

    space = SearchSpace.parse(SPACE)
    arch = str(sample_subnet(SPACE, "random", 3))
    net = resolve(SPACE, arch)
    items = stage_items(space, net)
    r = client.post("/predict_latency/stages", json={"device": BUNDLED_DEVICE, "hyperspace": "onnxw",
                                                     "stages": items})
    assert r.status_code == 200, r.text
    whole = client.post("/predict_latency", json={"device": BUNDLED_DEVICE, "space": SPACE,
                                                  "archs": [arch]}).json()["latencies_ms"][0]
    from profilers.boundary import kernel_elements

    kernels = net.kernels()
    from exporters.kernel_models import KernelConfig

    pred = client.app_state.registry.get(BUNDLED_DEVICE).predictor
    fixed = float(pred.fixed_ms(kernel_elements(KernelConfig.from_kernel(kernels[0]))[0],
                                kernel_elements(KernelConfig.from_kernel(kernels[-1]))[1]))
    assert sum(r.json()["latencies_ms"]) + fixed == pytest.approx(whole, rel=1e-9)
    bad = client.post("/predict_latency/stages", json={"device": BUNDLED_DEVICE, "hyperspace": "onnxw", "stages": [
        items[2], {"stage": "stage3", "block": 2, "arch": "4#32#4", "input": [32, 40]}]})
    assert bad.status_code == 422 and bad.json()["field"] == "stages[1]" and "allowed: 3, 5" in bad.text


SESSION_RUN = Path(__file__).resolve().parents[1] / \
    "data/networks/amd-epyc-zen4-vnni/onnxruntime-cpu/calib-small/run2-20261204/results.jsonl"


def test_session_calibration_is_the_next_version_and_survives_a_restart(client, db_url, tmp_path):
    """An agent posts a session's calib-small networks (real records from the Zen 4 host, measured 2026-12-04):
    the device gets a new predictor version that only moved g and d, served at once and after a restart."""
    import json

    from predictors.artifact import Predictor, predict_kernel_list
    from spaces import resolve

    recs = [json.loads(line) for line in SESSION_RUN.read_text().splitlines()][:12]
    agent = _tok(client, "agent")
    url = f"/predictors/{BUNDLED_DEVICE}/session"
    r = client.post(url, headers=agent, json={"records": recs, "source": "test"})
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["version"] == 1 and doc["n_models"] == 12 and 0.5 <= doc["scale"] <= 2
    assert doc["measured_from"] == "2026-12-04T23:32:52+00:00" and "session_leave_one_out" in doc["cv"]
    view = client.get(f"/predictors/{BUNDLED_DEVICE}").json()
    assert view["active"]["version"] == 1 and view["active"]["accuracy"]["session"]["n_models"] == 12
    assert view["active"]["accuracy"]["session"]["source"] == "test" and view["versions"][-1]["records"] == 12
    served = Predictor.load(view["active"]["path"])
    cal = served.meta.calibration
    assert cal.session.base == Predictor.load(BUNDLED / BUNDLED_SPEC).meta.calibration
    arch = str(sample_subnet(SPACE, "random", 7))
    got = client.post("/predict_latency", json={"device": BUNDLED_DEVICE, "space": SPACE, "archs": [arch]}).json()
    cfgs = [KernelConfig.from_kernel(k) for k in resolve(SPACE, arch).kernels()]
    assert got["predictor"]["version"] == 1
    assert got["latencies_ms"][0] == pytest.approx(predict_kernel_list(served, cfgs).latency_ms, rel=1e-6)
    # a restart serves the session version again (the bundled one is version 0)
    app2 = create_app(Settings(database_url=db_url, predictor_dir=tmp_path / "preds", admin_token=ADMIN))
    with TestClient(app2) as c2:
        assert c2.get(f"/predictors/{BUNDLED_DEVICE}").json()["active"]["version"] == 1
    # a second session is version 2 and refits from the same base
    r = client.post(url, headers=agent, json={"records": recs[:8]})
    assert r.status_code == 201 and r.json()["version"] == 2
    assert Predictor.load(client.get(f"/predictors/{BUNDLED_DEVICE}").json()["active"]["path"]).meta.calibration \
        .session.base == cal.session.base


def test_a_training_that_a_session_overtook_takes_the_next_version(client):
    """A training reserves max+1 when it starts and records its row when the forests are done; a session posted
    meanwhile takes that number first. The training's predictor is still recorded (the next free number) and
    served, not lost on the unique (device, version) constraint."""
    import json

    recs = [json.loads(line) for line in SESSION_RUN.read_text().splitlines()][:12]
    state = client.app_state
    reserved = 1  # what Trainer.start would have reserved before the session landed
    r = client.post(f"/predictors/{BUNDLED_DEVICE}/session", headers=_tok(client, "agent"), json={"records": recs})
    assert r.status_code == 201 and r.json()["version"] == reserved
    got = state.trainer.record(BUNDLED_DEVICE, reserved, BUNDLED / BUNDLED_SPEC, time.time(), 42, {"conv": {}})
    assert got == reserved + 1
    state._install(BUNDLED_DEVICE, got, BUNDLED / BUNDLED_SPEC, time.time())
    view = client.get(f"/predictors/{BUNDLED_DEVICE}").json()
    assert [v["version"] for v in view["versions"]] == [1, 2] and view["versions"][-1]["records"] == 42
    assert view["active"]["version"] == 2 and view["active"]["path"] == str(BUNDLED / BUNDLED_SPEC)


def test_session_calibration_refuses_what_is_not_a_calibration_session(client):
    import json

    recs = [json.loads(line) for line in SESSION_RUN.read_text().splitlines()][:8]
    agent, cl = _tok(client, "agent"), _tok(client, "client")
    url = f"/predictors/{BUNDLED_DEVICE}/session"
    assert client.post(url, json={"records": recs}).status_code == 401
    r = client.post(url, headers=cl, json={"records": recs})
    assert r.status_code == 403 and "role client" in r.text
    r = client.post("/predictors/nope/session", headers=agent, json={"records": recs})
    assert r.status_code == 404 and "not known" in r.text
    evaluation = [dict(x, name=x["name"].replace("calib-small", "random")) for x in recs]
    r = client.post(url, headers=agent, json={"records": evaluation})
    assert r.status_code == 422 and "the evaluation set is refused" in r.text and "onnxw-random-0" in r.text
    swapped = [dict(recs[0], arch=recs[2]["arch"]), *recs[1:]]
    r = client.post(url, headers=agent, json={"records": swapped})
    assert r.status_code == 422 and "onnxw-calib-small-0" in r.text and "another subnet" in r.text
    r = client.post(url, headers=agent, json={"records": recs[:4]})
    assert r.status_code == 422 and "at least 5 are needed" in r.text
    r = client.post(url, headers=agent, json={"records": [dict(recs[0], measured_ms=-1.0)]})
    assert r.status_code == 422 and "measured_ms" in r.text
    assert client.get(f"/predictors/{BUNDLED_DEVICE}").json()["active"]["version"] == 0  # nothing installed
    fp = local_fingerprint("onnxruntime-cpu").model_dump()
    reg = client.post("/agents/register", headers=agent, json={"backend": "onnxruntime-cpu", "device": "lab-new",
                                                               "fingerprint": fp, "hostname": "h"})
    assert reg.status_code == 200
    r = client.post("/predictors/lab-new/session", headers=agent, json={"records": recs})
    assert r.status_code == 409 and "no predictor yet" in r.text


@pytest.fixture(scope="module")
def kernel_models(tmp_path_factory) -> list[tuple[KernelConfig, bytes]]:
    """Seven INT8 one-kernel ONNX models inside the bundled predictor's training data, and one FP32 model."""
    from predictors.artifact import Predictor

    pred = Predictor.load(BUNDLED / BUNDLED_SPEC)
    tmp = tmp_path_factory.mktemp("online")
    out = []
    for hw in (14, 28, 56):
        for c in (64, 96, 128, 192):
            for t, k in (("dwconv-bn-relu", 3), ("conv-bn-relu", 1)):
                cfg = KernelConfig(type=t, hw=hw, cin=c, cout=c, kernel=k)
                if len(out) < 7 and t in pred.kernel_types and not pred.outside_training([cfg]):
                    path = tmp / f"{len(out)}.onnx"
                    export_kernel(cfg, "onnx", path)
                    out.append((cfg, path.read_bytes()))
    assert len(out) == 7, "the bundled predictor's training data covers too few of these kernels"
    export_kernel(out[0][0], "onnx", tmp / "fp32.onnx", fp32=True)
    return out + [(out[0][0], (tmp / "fp32.onnx").read_bytes())]


def test_online_calibration_follows_the_devices_measurements_and_survives_a_restart(client, db_url, tmp_path,
                                                                                     kernel_models):
    """INT8 models an agent measures refit the device's served predictor (server.online): a machine 20% faster
    than the predictor's calibration is followed after 5 measurements, without a new version; an FP32 model is
    not fitted; a restart rebuilds the fit from the database, and it lapses when its measurements age out."""
    from server.models import PredictorRow

    agent, cl = _tok(client, "agent"), _tok(client, "client")
    fp = local_fingerprint("onnxruntime-cpu").model_dump()
    aid = client.post("/agents/register", headers=agent, json={"backend": "onnxruntime-cpu", "device": "lab-cpu",
                                                               "fingerprint": fp, "hostname": "h"}).json()["agent_id"]
    with client.app_state.sessions() as s:  # the device's predictor: the bundled one, as its version 1
        s.add(PredictorRow(device="lab-cpu", version=1, path=str(BUNDLED / BUNDLED_SPEC), trained_at=time.time(),
                           records=0, accuracy={}))
        s.commit()
    client.app_state.registry.install("lab-cpu", 1, BUNDLED / BUNDLED_SPEC, time.time())

    def predicted(model: bytes) -> dict:
        r = client.post("/predict_latency/onnx", params={"device": "lab-cpu"}, content=model)
        assert r.status_code == 200, r.text
        return r.json()

    def measure(model: bytes, latency_ms: float) -> None:
        sha = client.post("/models", headers=cl, params={"format": "onnx"}, content=model).json()["sha256"]
        job = client.post("/jobs", headers=cl, json={"device": "lab-cpu", "model_sha256": sha}).json()
        assert client.post("/jobs/lease", headers=agent, json={"agent_id": aid}).json()["id"] == job["id"]
        res = {"agent_id": aid, "ok": True, "latency_ms": latency_ms, "record": {"latency_ms": latency_ms}}
        assert client.post(f"/jobs/{job['id']}/result", headers=agent, json=res).json()["status"] == "stored"

    base = [predicted(m)["latency_ms"] for _, m in kernel_models[:7]]
    arch = str(sample_subnet(SPACE, "random", 3))
    subnet = lambda: client.post("/predict_latency", json={"device": "lab-cpu", "space": SPACE,  # noqa: E731
                                                           "archs": [arch]}).json()
    subnet_base = subnet()["latencies_ms"][0]
    measure(kernel_models[7][1], 0.5 * base[0])  # FP32: another path of the runtime, not fitted
    for i in range(4):
        measure(kernel_models[i][1], 0.8 * base[i])
        assert predicted(kernel_models[6][1])["predictor"]["online"] is None  # fewer than 5 INT8 models
    measure(kernel_models[4][1], 0.8 * base[4])
    doc = predicted(kernel_models[6][1])
    online = doc["predictor"]["online"]
    assert doc["predictor"]["version"] == 1 and online["n_models"] == 5 and online["source"] == "online"
    assert online["scale"] == pytest.approx(0.8, abs=0.05) and not online["warnings"]
    assert doc["latency_ms"] == pytest.approx(0.8 * base[6], rel=0.03)  # a model it was not fitted on
    assert subnet()["latencies_ms"][0] == pytest.approx(0.8 * subnet_base, rel=0.05)
    assert client.get("/predictors/lab-cpu").json()["active"]["online"]["n_models"] == 5
    # a restart serves the same fit, rebuilt from the measurements table
    app2 = create_app(Settings(database_url=db_url, predictor_dir=tmp_path / "preds", admin_token=ADMIN))
    with TestClient(app2) as c2:
        again = c2.get("/predictors/lab-cpu").json()["active"]
        assert again["version"] == 1 and again["online"]["scale"] == pytest.approx(online["scale"])
    # measurements older than the window's age are not a state to assume: the installed predictor is served
    app3 = create_app(Settings(database_url=db_url, predictor_dir=tmp_path / "preds", admin_token=ADMIN,
                               online_max_age_min=1e-4))
    with TestClient(app3) as c3:
        assert c3.get("/predictors/lab-cpu").json()["active"]["online"] is None
