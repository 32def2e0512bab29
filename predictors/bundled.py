"""Predictors shipped with the repository, one per (device, backend), and how a name finds one.

Layout: ``predictors/bundled/<device>/<backend>/{metadata.json,forests.npz}``, where ``<device>`` is
:func:`profilers.fingerprint.device_slug` of the machine the kernels were measured on (for example
``intel-xeon-2.80ghz-vnni``). A predictor answers for the device it was measured on only: an AMD EPYC
without VNNI and an Intel Xeon with AVX-512 VNNI differ by far more than the 10% we aim for, so a
host without a bundled predictor gets an error that says how to make one, not a wrong number.

Names a command accepts for a predictor:
  * a predictor directory (anything with a metadata.json);
  * ``<device>/<backend>``: a bundled one, e.g. ``intel-xeon-2.80ghz-vnni/onnxruntime-cpu``;
  * ``local:<backend>``: the bundled predictor of this host for that backend.
"""
from __future__ import annotations

from pathlib import Path

from .artifact import Predictor

BUNDLED = Path(__file__).parent / "bundled"


def bundled_predictors(backend: str | None = None) -> list[str]:
    """``<device>/<backend>`` of every bundled predictor (of one backend if given)."""
    found = BUNDLED.glob(f"*/{backend or '*'}/metadata.json")
    return sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in found)


def local_device(backend: str) -> str:
    from profilers.fingerprint import device_slug, local_fingerprint

    return device_slug(local_fingerprint(backend))


def bundled_path(device: str, backend: str) -> Path:
    return BUNDLED / device / backend


def find_bundled(backend: str) -> Path:
    """This host's bundled predictor for ``backend``, or a LookupError that says what exists and what to run."""
    device = local_device(backend)
    path = bundled_path(device, backend)
    if (path / "metadata.json").is_file():
        return path
    have = ", ".join(bundled_predictors()) or "none"
    raise LookupError(
        f"no predictor for this host ({device}) and backend {backend}; bundled: {have}. Measure and train one: "
        f"python -m profilers collect --backend {backend} --out data/kernels/{device}/{backend} && "
        f"python -m predictors train --backend {backend}")


def resolve_predictor(spec: str | Path) -> Path:
    """The directory a predictor name points to (see the module docstring); errors name the choices."""
    s = str(spec)
    if s.startswith("local:"):
        return find_bundled(s[len("local:"):])
    p = Path(s)
    if (p / "metadata.json").is_file():
        return p
    if (BUNDLED / s / "metadata.json").is_file():
        return BUNDLED / s
    raise FileNotFoundError(f"predictor: {s!r} is neither a predictor directory nor a bundled predictor; "
                            f"allowed: a directory with metadata.json, local:<backend>, or one of "
                            f"{', '.join(bundled_predictors()) or '(none bundled)'}")


def load_predictor(spec: str | Path) -> Predictor:
    return Predictor.load(resolve_predictor(spec))
