"""ONNX and TFLite INT8 export: quantized graphs that run in onnxruntime and LiteRT."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from spaces import resolve
from spaces.sampling import sample_subnet
from exporters.calibration import Calibration
from exporters.cpu import CpuInfo
from exporters.kernel_models import KernelConfig, export_kernel
from exporters.onnx_export import export_onnx
from exporters.recipe import QuantRecipe, default_recipe
from exporters.result import tflite_op_details
from exporters.tflite_export import export_tflite
from exporters.torch_builder import build_torch, imprint_classifier, smooth_images

VNNI = "onnxw-151122-023231"
PIXEL4 = "mobilew-122222-155400"


class TensorCalibration(Calibration):
    """Calibration from given tensors (image-like inputs of the accuracy check)."""

    def __init__(self, xs: torch.Tensor):
        super().__init__(tuple(xs[:1].shape), len(xs))
        self.xs = [x[None].numpy() for x in xs]

    def __iter__(self):
        return iter(self.xs)


def convs_are_quantized(model: onnx.ModelProto) -> bool:
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    qlinear = [n for n in model.graph.node if n.op_type == "QLinearConv"]
    if qlinear and not convs:
        return True
    return bool(convs) and all(producers.get(n.input[0]) == "DequantizeLinear" and
                               producers.get(n.input[1]) == "DequantizeLinear" for n in convs)


@pytest.mark.parametrize("space,arch_name", [(VNNI, "SEQnet@vnni-A0"), (PIXEL4, "SEQnet@pixel4-A0")])
def test_int8_onnx_quantized_runs_and_agrees_with_fp32(tmp_path, seqnets, space, arch_name):
    """Check: weights get trained-looking margins by imprinting 32 prototype classes; 64 perturbed
    views (noise 0.1) of the prototypes are classified by the FP32 torch model and the INT8 ONNX model
    (calibrated on 16 other image-like inputs); top-1 must agree on at least 85% (measured: 97%)."""
    net = resolve(*seqnets[arch_name])
    r = net.resolution
    model = build_torch(net, seed=0)
    protos = smooth_images(32, r, seed=1)
    imprint_classifier(model, protos)
    g = torch.Generator().manual_seed(5)
    views = (protos.repeat(2, 1, 1, 1) + 0.1 * torch.randn((64, 3, r, r), generator=g)).clamp(-2.5, 2.5)
    res = export_onnx(net, tmp_path / "m.onnx", torch_model=model, calibration=TensorCalibration(smooth_images(16, r, 2)))
    assert res.precision == "int8" and res.recipe == default_recipe().to_string()
    assert convs_are_quantized(onnx.load(res.path))
    sess = ort.InferenceSession(res.path, providers=["CPUExecutionProvider"])
    yq = np.concatenate([sess.run(None, {"input": v[None].numpy()})[0] for v in views])
    with torch.no_grad():
        yf = model(views).numpy()
    assert len(set(yf.argmax(1))) >= 16  # the check is about real classes, not one constant answer
    agree = float((yq.argmax(1) == yf.argmax(1)).mean())
    assert agree >= 0.85, f"INT8/FP32 top-1 agreement {agree:.2f}"


@pytest.mark.parametrize("recipe,expect_op", [("qdq-u8s8-pc-rr", "DequantizeLinear"),
                                              ("qdq-s8s8-pc", "DequantizeLinear"),
                                              ("qoperator-u8s8-pc", "QLinearConv")])
def test_onnx_recipes(tmp_path, recipe, expect_op):
    net = resolve(VNNI, sample_subnet(VNNI, "min"))
    res = export_onnx(net, tmp_path / "m.onnx", recipe=QuantRecipe.parse(recipe), calibration=Calibration((1, 3, 160, 160), 4))
    model = onnx.load(res.path)
    assert res.recipe == recipe and expect_op in res.ops and convs_are_quantized(model)
    if "s8s8" in recipe:
        qtypes = {i.data_type for i in model.graph.initializer if i.name.endswith("zero_point")}
        assert onnx.TensorProto.INT8 in qtypes and onnx.TensorProto.UINT8 not in qtypes
    out = ort.InferenceSession(res.path).run(None, {"input": np.zeros((1, 3, 160, 160), np.float32)})[0]
    assert out.shape == (1, 1000) and np.isfinite(out).all()


def test_fp32_onnx_matches_torch(tmp_path):
    net = resolve(PIXEL4, sample_subnet(PIXEL4, "random", 3))
    model = build_torch(net)
    res = export_onnx(net, tmp_path / "f.onnx", fp32=True, torch_model=model)
    assert "QuantizeLinear" not in res.ops and "BatchNormalization" not in res.ops  # BN folded
    x = np.random.default_rng(0).standard_normal(model.input_shape).astype(np.float32)
    y = ort.InferenceSession(res.path).run(None, {"input": x})[0]
    with torch.no_grad():
        assert np.abs(y - model(torch.from_numpy(x)).numpy()).max() < 1e-3


def test_recipe_strings_and_cpu_default():
    for s in ("qdq-u8s8-pc-rr", "qdq-u8s8", "qoperator-s8s8-pc", "qdq-u8u8-rr"):
        assert QuantRecipe.parse(s).to_string() == s
    no_vnni = CpuInfo(model="AMD EPYC", arch="x86_64", flags=["avx2", "fma"], cores=2)
    vnni = CpuInfo(model="Xeon Silver 4210", arch="x86_64", flags=["avx2", "avx512f", "avx512_vnni"], cores=8)
    arm = CpuInfo(model="Cortex-A76", arch="aarch64", flags=["asimddp"], cores=8)
    assert default_recipe(no_vnni).to_string() == "qdq-u8s8-pc-rr"
    assert default_recipe(vnni).to_string() == "qdq-u8s8-pc"
    assert default_recipe(arm).to_string() == "qdq-u8s8-pc"
    assert QuantRecipe.parse("auto", vnni).reduce_range is False


def test_image_folder_calibration(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (90 + i * 20, 120, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    calib = Calibration((1, 3, 160, 160), 5, image_dir=tmp_path)
    xs = list(calib)
    assert len(xs) == 5 and all(x.shape == (1, 3, 160, 160) and x.dtype == np.float32 for x in xs)
    assert "images from" in calib.describe()
    net = resolve(VNNI, sample_subnet(VNNI, "min"))
    res = export_onnx(net, tmp_path / "m.onnx", calibration=calib)
    assert res.calibration.startswith("5 images")
    with pytest.raises(ValueError, match="calibration image folder"):
        Calibration((1, 3, 160, 160), image_dir=tmp_path / "missing")


@pytest.mark.parametrize("space", [PIXEL4, VNNI])
def test_int8_tflite_all_convs_int8_and_runs(tmp_path, space):
    from ai_edge_litert.interpreter import Interpreter

    net = resolve(space, sample_subnet(space, "min"))
    res = export_tflite(net, tmp_path / "m.tflite", calibration=Calibration((1, 3, 160, 160), 4))
    ops = tflite_op_details(res.path)
    convs = [op for op in ops if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    assert len(convs) >= 40
    for op in convs:
        assert op["input_dtypes"][:2] == ["int8", "int8"] and op["output_dtypes"] == ["int8"], op
    it = Interpreter(model_path=res.path, num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8 and tuple(inp["shape"]) == (1, 160, 160, 3)
    it.set_tensor(inp["index"], np.zeros(inp["shape"], np.int8))
    it.invoke()
    assert it.get_tensor(out["index"]).shape == (1, 1000)


@pytest.mark.parametrize("cfg", [
    dict(type="conv-bn-relu", hw=28, cin=32, cout=64, kernel=3, stride=2),
    dict(type="dwconv-bn-relu6", hw=56, cin=96, kernel=5),
    dict(type="se", hw=14, cin=96, mid=24),
    dict(type="add-relu", hw=28, cin=32),
    dict(type="fc", hw=1, cin=1920, cout=1000),
    dict(type="act-hswish", hw=28, cin=32),
    dict(type="global-avgpool", hw=7, cin=1280),
], ids=lambda c: c["type"])
def test_kernel_models_export_and_run(tmp_path, cfg):
    from ai_edge_litert.interpreter import Interpreter

    k = KernelConfig(**cfg)
    o = export_kernel(k, "onnx", tmp_path / "k.onnx")
    sess = ort.InferenceSession(o.path)
    feeds = {i.name: np.random.default_rng(0).standard_normal(s).astype(np.float32)
             for i, s in zip(sess.get_inputs(), k.input_shapes())}
    assert np.isfinite(sess.run(None, feeds)[0]).all()
    t = export_kernel(k, "tflite", tmp_path / "k.tflite")
    it = Interpreter(model_path=t.path, num_threads=1)
    it.allocate_tensors()
    assert len(it.get_input_details()) == len(k.input_shapes())
    it.invoke()


def test_kernel_config_from_subnet_kernels():
    net = resolve(VNNI, sample_subnet(VNNI, "min"))
    cfgs = {KernelConfig.from_kernel(k).type for k in net.kernels()}
    assert {"conv-bn-relu", "se", "add", "fc"} <= cfgs
    with pytest.raises(ValueError, match="unknown kernel type"):
        KernelConfig(type="conv-bn-gelu", hw=8, cin=8, cout=8)
    with pytest.raises(ValueError, match="se needs mid"):
        KernelConfig(type="se", hw=8, cin=8)


def _cli(*args: str):
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "exporters", *args], capture_output=True, text=True, timeout=300)
    return p, time.perf_counter() - t0


A0 = "d1#1#2#2#2#2#2#1_k3#3#3#3#3#3#3#3#3#3#3#3#3_w16#16#32#32#64#64#112#112#144#144#240#240#320" \
     "_e0#0.5#4.0#4.0#1.0#1.0#4.0#4.0#4.0#4.0#4.0#4.0#4.0_r160"


@pytest.mark.parametrize("args,needle", [
    (["--arch", "d1#1#2_k3_w16"], "arch"),
    (["--arch", A0.replace("#240#240#320", "#240#240#400").replace("#144#144#240", "#144#144#240")], None),
    (["--arch", A0.replace("w16#16#32#32#64", "w16#16#32#40#64")], "stage1 layer 1 width: 40 is not allowed; allowed: 32, 48"),
    (["--arch", A0.replace("_k3#3#3#3#3#3#3#3", "_k3#3#3#3#3#3#9#3")], "stage3 layer 0 kernel: 9 is not allowed"),
    (["--sample", "min", "--recipe", "qdq-fp16"], "recipe"),
    (["--sample", "min", "--calib-dir", "/nonexistent"], "calibration image folder"),
    ([], "exactly one of --arch"),
], ids=["bad-string", "valid-width-400", "impossible-width", "bad-kernel", "bad-recipe", "bad-calib", "no-arch"])
def test_cli_rejects_bad_input_before_work(tmp_path, args, needle):
    out = tmp_path / "m.onnx"
    p, secs = _cli("onnx", "--space", VNNI, *args, "--out", str(out))
    if needle is None:  # 400 is in stage6's window 1 (320..416): a valid subnet exports
        assert p.returncode == 0, p.stderr
        assert out.exists() and "wrote" in p.stdout
        return
    assert p.returncode == 2 and needle in " ".join(p.stderr.split()), p.stderr
    assert not out.exists() and secs < 30


def test_cli_exports_tflite_and_prints_json(tmp_path):
    import json

    out = tmp_path / "m.tflite"
    p, _ = _cli("tflite", "--space", PIXEL4, "--sample", "random", "--seed", "4", "--calib-samples", "2",
                "--out", str(out), "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["path"] == str(out) and doc["format"] == "tflite" and doc["flops"] > 1e8 and doc["ops"]["CONV_2D"] > 10


@pytest.mark.parametrize("cfg", [dict(type="se", hw=14, cin=96, mid=24), dict(type="add-relu", hw=28, cin=32)],
                         ids=lambda c: c["type"])
def test_tflite_concrete_function_path_equals_keras_converter(tmp_path, cfg):
    """convert_keras traces once into a concrete function (2.3-2.6x faster than from_keras_model's SavedModel
    archive on whole subnets); the file must be the same network: same ops, bit-identical int8 outputs."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from exporters.calibration import MultiCalibration
    from exporters.kernel_models import KernelConfig, build_kernel_keras
    from exporters.result import tflite_ops
    from exporters.tflite_export import _nchw, convert_keras, quiet_converter

    km = build_kernel_keras(KernelConfig(**cfg))
    calib = MultiCalibration.of(None, [_nchw(i.shape) for i in km.inputs])
    ours = convert_keras(km, tmp_path / "ours.tflite", calibration=calib)
    with quiet_converter():
        conv = tf.lite.TFLiteConverter.from_keras_model(km)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = calib.tflite_dataset
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
        (tmp_path / "keras.tflite").write_bytes(conv.convert())
    assert tflite_ops(ours) == tflite_ops(tmp_path / "keras.tflite")
    outs = []
    for path in (ours, tmp_path / "keras.tflite"):
        it = Interpreter(model_path=str(path), num_threads=1)
        it.allocate_tensors()
        for d in it.get_input_details():
            assert d["shape"][0] == 1
            it.set_tensor(d["index"], np.random.default_rng(d["index"]).integers(-128, 127, d["shape"], dtype=np.int8))
        it.invoke()
        outs.append(it.get_tensor(it.get_output_details()[0]["index"]))
    assert outs[0].dtype == np.int8 and np.array_equal(outs[0], outs[1])


def test_trained_like_se_squeezes_are_alive():
    """onnxw-calib-32 had an SE squeeze dead for every input; its INT8 TFLite file then had a requantization
    scale of 3,462 and LiteRT refused to load it with XNNPACK. Every squeeze channel is now alive."""
    from exporters.torch_builder import SE

    net = resolve("onnxw-432331-112001", "d1#1#4#4#5#3#5#1_k3#3#5#3#3#5#5#7#3#5#3#5#3#5#3#5#5#7#7#7#7#5#5#5_"
                  "w32#16#48#48#48#48#48#48#64#64#96#112#96#128#128#112#144#112#208#240#240#240#208#416_"
                  "e0#0.5#1.0#1.0#0.5#0.5#1.5#1.0#1.5#1.5#4.0#4.0#4.0#8.0#8.0#1.0#1.0#1.0#1.0#1.0#1.0#0.5#0.5#6.0_r208")
    model = build_torch(net, seed=0)
    outs = []
    hooks = [m.reduce.register_forward_hook(lambda _m, _i, o: outs.append(o)) for m in model.modules()
             if isinstance(m, SE)]
    with torch.no_grad():
        model(smooth_images(4, 208, seed=3))
    for h in hooks:
        h.remove()
    assert len(outs) >= 5
    for o in outs:  # every channel of every squeeze passes its ReLU for image-like inputs
        assert (o.amax(dim=(0, 2, 3)) > 0).all()


def test_xnnpack_refusal_is_a_warning_of_the_export(tmp_path):
    """A conv whose ReLU is dead on all calibration data gets a degenerate output scale; XNNPACK refuses the
    requantization and LiteRT the whole model. The export says so, naming the op (a real LiteRT check)."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from exporters.tflite_export import export_tflite_model

    x = keras.Input((8, 8, 16))
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    dead = keras.layers.Conv2D(8, 1, activation="relu", bias_initializer=keras.initializers.Constant(-1e3))(h)
    y = keras.layers.Conv2D(16, 1)(dead)
    res = export_tflite_model(keras.Model(x, keras.layers.Add()([h, y])), tmp_path / "dead.tflite")
    assert len(res.warnings) == 1 and "CONV_2D" in res.warnings[0] and "XNNPACK" in res.warnings[0]
    with pytest.raises(Exception, match="XNNPACK|delegate"):
        Interpreter(model_path=res.path, num_threads=1).allocate_tensors()
    ok = export_tflite_model(keras.Model(x, h), tmp_path / "ok.tflite")
    assert ok.warnings == []
    Interpreter(model_path=ok.path, num_threads=1).allocate_tensors()
