"""End-to-end evaluation: predicted vs measured INT8 latency of whole subnets.

Held-out subnets are random subnets of random search spaces of the backend's hyperspaces, plus the
10 published SEQnets when their file is given. Each is exported (INT8), measured with the profilers'
protocol and predicted from its kernel list (:func:`predict_subnets`). Results are appended to a JSON-lines
file as they come (the run takes hours at full size and can be killed and resumed), and
:func:`report` computes RMSE, RMSPE and the share within +-5% / +-10%, with a scatter plot.
"""
from __future__ import annotations

import contextlib
import json
import random
import re
import tempfile
import textwrap
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Hashable, Iterable, Iterator

import numpy as np
import yaml

from exporters.calibration import Calibration
from exporters.kernel_config import KernelConfig
from profilers.prefetch import Prefetcher, RecycledWorker, under_prefetch
from profilers.protocol import Protocol
from profilers.worker import Profiler
from spaces import SearchSpace, resolve
from spaces.hyperspace import HYPERSPACES
from spaces.sampling import random_space, sample_subnet

from .artifact import Predictor, predict_kernel_list
from .train import metrics


# set name -> seed prefix; the networks are named <hyperspace>-<set>-<i>
SETS = {"random": "eval", "calib": "calib", "calib-small": "calib-small"}
# calib-small keeps the subnets below this quantile of their hyperspace's MACs (estimated from SMALL_REF draws of the
# same distribution). Why: on the Zen 4 host 12% of the held-out networks ran under 6 ms but 6 of the 80 calibration
# networks did, and the fit could not tell a per-kernel cost from the per-type scales; the lowest third by MACs held
# 65 of the 88 evaluation networks under 7 ms there (log MACs vs log latency correlate 0.89).
SMALL_QUANTILE = 1 / 3
SMALL_REF = 300
# networks per hyperspace in each round of a set's random stream (see eval_set): the --n the committed runs used
CHUNK = {"random": 300, "calib": 40, "calib-small": 15}
DRIFT_BLOCK = 16  # networks per point of the report's drift curve: two of the blocks of 8 that an evaluation interleaves


def eval_set(hyperspaces: list[str], n_per: int, seed: int = 0, seqnets: Path | None = None,
             kind: str = "random", start: int = 0) -> list[tuple[str, str, str]]:
    """(name, space, arch) of held-out subnets; seeds differ from any training sampler's.

    ``kind="random"`` is the evaluation set; ``kind="calib"`` the calibration set of
    :mod:`predictors.calibration`, drawn from another seed and named ``<hyperspace>-calib-<i>``, so a
    calibrated predictor is never judged on the networks it was calibrated on. ``kind="calib-small"`` adds
    small networks to a calibration (its own seed; the same random spaces and subnets, kept only below
    :data:`SMALL_QUANTILE` of the hyperspace's MACs), so that the fit sees the range where a per-kernel
    cost is a large share of the latency.
    Order: the SEQnets first, then the hyperspaces' random subnets taken in turn, so that an evaluation
    stopped early (they take hours) is still a balanced sample.

    A name always means the same subnet, whatever ``n_per`` and ``hyperspaces`` were asked for, so results files
    of earlier runs resume and two sessions' records of ``mobilew-random-17`` compare (``agreement``). Why a fixed
    layout: every set is one random stream, and before 2026-12-04 each hyperspace drew ``n_per`` networks from it in
    the order asked, so ``--n 75`` gave other ``mobilew`` networks than ``--n 300`` under the same names. The stream
    is now cut in rounds of :data:`CHUNK` networks per hyperspace, in :data:`HYPERSPACES` order; its first round is
    exactly what the committed runs drew (``--n 300``, ``--set calib --n 40``, ``--set calib-small --n 15``, both
    hyperspaces), so their names keep their subnets (``tests/test_calibration.py`` checks committed records).

    ``start`` skips the first ``start`` networks of each hyperspace (``<hs>-<set>-<start>`` onwards): a set that no
    earlier run measured, for judging a predictor that earlier evaluations may have shaped."""
    if start < 0:
        raise ValueError(f"start: {start} is not allowed; allowed: 0 or more")
    if kind not in SETS:
        raise ValueError(f"set: {kind!r} is not allowed; allowed: {', '.join(SETS)}")
    bad = [hs for hs in hyperspaces if hs not in HYPERSPACES]
    if bad:
        raise ValueError(f"hyperspaces: {bad} not allowed; allowed: {', '.join(HYPERSPACES)}")
    rng = random.Random(f"{SETS[kind]}-{seed}")
    chunk = CHUNK[kind]
    rows: dict[str, list[tuple[str, str, str]]] = {hs: [] for hs in HYPERSPACES}
    limits: dict[str, float] = {}

    def draw(hs: str):  # calib-small: a subnet and its MACs
        from spaces.flops import network_macs

        sp = random_space(hs, rng)
        sub = sample_subnet(sp, "random", rng)
        return sp, sub, network_macs(resolve(sp, sub))

    for _ in range(-(-(start + n_per) // chunk)):
        for hs in HYPERSPACES:
            got = rows[hs]
            if kind == "calib-small":
                if hs not in limits:
                    limits[hs] = float(np.quantile([draw(hs)[2] for _ in range(SMALL_REF)], SMALL_QUANTILE))
                want = len(got) + chunk
                while len(got) < want:
                    sp, sub, macs = draw(hs)
                    if macs <= limits[hs]:
                        got.append((f"{hs}-{kind}-{len(got)}", sp.to_string(), sub.to_string()))
            else:
                for _ in range(chunk):
                    sp = random_space(hs, rng)
                    got.append((f"{hs}-{kind}-{len(got)}", sp.to_string(),
                                sample_subnet(sp, "random", rng).to_string()))
    per_hs = [rows[hs] for hs in hyperspaces]
    items = []
    if seqnets is not None:
        d = yaml.safe_load(Path(seqnets).read_text())
        spaces = d["specific_supernet_encoding_dict"]
        for name, (sp, arch) in d["specific_subnet_encoding_dict"].items():
            if SearchSpace.parse(spaces[sp]).hyperspace.name in hyperspaces:
                items.append((name, spaces[sp], arch))
    for i in range(start, start + n_per):
        items += [rows[i] for rows in per_hs]
    return items


SET_NAME = re.compile(r"^(?P<hs>[a-z0-9]+)-(?P<kind>random|calib-small|calib)-(?P<i>\d+)$")


def set_mismatches(recs: list[dict], kinds: tuple[str, ...] = ("calib", "calib-small")) -> list[str]:
    """Why each record is not the network of :func:`eval_set` its name says it is (name, space, arch), one line
    each; empty when all are. A calibration fitted on records that a client names is only held out from the
    evaluation set when the names are of ``kinds`` and hold the very subnets of those sets."""
    bad, want = [], {}
    for r in recs:
        m = SET_NAME.match(str(r.get("name", "")))
        if m is None or m["kind"] not in kinds or m["hs"] not in HYPERSPACES:
            bad.append(f"{r.get('name')!r}: not a name of the {' or '.join(kinds)} set (<hyperspace>-<set>-<i>, "
                       f"hyperspace one of {', '.join(HYPERSPACES)})")
            continue
        if int(m["i"]) >= 10 * CHUNK[m["kind"]]:  # drawing the set that far would take long: no run goes there
            bad.append(f"{r['name']!r}: index beyond the {10 * CHUNK[m['kind']]} networks per hyperspace of the "
                       f"{m['kind']} set")
            continue
        want.setdefault(m["kind"], {})[r["name"]] = (m["hs"], int(m["i"]))
    for kind, names in want.items():
        n = max(i for _, i in names.values()) + 1
        sets = {name: (sp, a) for name, sp, a in eval_set(sorted({hs for hs, _ in names.values()}), n, kind=kind)}
        bad += [f"{r['name']!r}: the set's network of that name is another subnet (in {sets[r['name']][0]})"
                for r in recs if r.get("name") in names and sets[r["name"]] != (r.get("space"), r.get("arch"))]
    return bad


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


def _export_job(backend: str, tmp: str, job) -> Path:
    """Export one evaluation item into ``tmp``; runs in :func:`evaluate`'s recycled export process."""
    from exporters.onnx_export import export_onnx
    from exporters.tflite_export import export_tflite

    i, (name, space, arch) = job
    path = Path(tmp) / f"m{i}{'.onnx' if backend == 'onnxruntime-cpu' else '.tflite'}"
    if name.startswith("keras:"):
        return _keras_app(name[6:], path)
    net = resolve(space, arch)
    r = net.resolution
    (export_onnx if backend == "onnxruntime-cpu" else export_tflite)(net, path, calibration=Calibration((1, 3, r, r), 4))
    return path


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
# Networks exported per export process before a fresh one takes over (see profilers.prefetch.RecycledWorker). A new
# process costs a few seconds of imports. On the Zen 4 host, 16 TFLite exports take 4-5 min and the child peaks at
# 2.5-4 GB; the parent process had reached 12.4 GB after 108. ONNX exports take 3-5 s each and one process exported
# 362 networks in 78 min without trouble, so it is replaced less often.
EXPORTS_PER_CHILD = {"tflite-cpu": 16, "onnxruntime-cpu": 64}
# the sets a scatter plot marks, as :func:`_groups` names them, and their markers (the report's and consensus's plots)
PLOT_SETS = (("random", "o"), ("calib", "s"), ("calib-small", "D"), ("SEQnets", "*"), ("keras.applications", "^"))


def network_ms(rounds_ms: list[float]) -> float:
    """A network's latency from its records: the fastest, the estimator of a run over its rounds and of
    :func:`select_records` over a slice of them (:func:`pool_results` applies the same rule across runs, keeping the
    faster run's whole record). What disturbs a run on a shared VM (a
    neighbour, an export beside it) slows a record down, so the fastest of a few is the most repeatable one
    (:func:`evaluate` gives the figures)."""
    return min(rounds_ms)


def evaluate(predictor: Predictor | None, backend: str, items, out: str | Path, protocol: Protocol | None = None,
             progress=None, budget_s: float | None = None, rounds: int = 3, block: int = 8,
             quiet_rounds: bool = True, retry_failed: bool = True, anchor: bool = False,
             lend_core: bool = True) -> Path:
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

    While a quiet round waits, the measuring core has nothing to do; with ``lend_core`` a second export process
    pinned to it helps with the next block meanwhile (a :class:`Prefetcher` helper). It stops before the round
    starts, so no measurement ever shares its core with an export, and the rounds measure what they measured
    before; only the wait is shorter. A TFLite evaluation, bound by its exports, gets faster by up to the ratio of
    cores to export on (two here; ``bench/eval_bench.py``).

    Each round also keeps the reference probe that the measurement ran after it (``probe_ms``: a fixed float
    matmul, see :mod:`profilers.protocol`), so that an analysis can ask whether the machine's speed, not the
    predictor, moved a block: on the Emerald Rapids host the block medians of the error wandered by about 20%.

    With ``anchor``, the backend's anchor network (:mod:`predictors.anchor`) is measured at the start of every
    round of a block and once after its last round (``anchor_rounds_ms`` in each record of the block), so that the
    report can divide out the machine's slow phases.

    Every round is also appended to ``results.rounds.jsonl`` beside ``out`` as it is measured (not with ``anchor``),
    and a resumed run measures only the rounds a network lacks: a block is written to ``out`` when its last round
    ends, and with a large ``block`` (a network's records spread over a long time: on the Zen 4 host 302 small
    networks, a round of that one block took about 12 minutes) a stop would otherwise lose everything since.

    A resumed run skips the networks already measured; with ``retry_failed`` it tries the failed ones again and
    appends their new record, which replaces the old one in :func:`load_results` and so in the report.
    """
    if rounds < 1 or block < 1:
        raise ValueError(f"rounds and block must be >= 1, got {rounds} and {block}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A network that failed (an export error, a runtime crash) is tried again by the next run rather than lost:
    # on the Zen 4 host one random subnet crashed LiteRT once and measured normally when exported again.
    have = load_results(out)
    clash = [name for name, space, arch in items if name in have
             and (have[name].get("space"), have[name].get("arch")) not in ((space, arch), (None, None))]
    if clash:
        raise ResultsClash(f"{out}: holds {len(clash)} network(s) under the same name as another subnet (e.g. "
                         f"{', '.join(clash[:3])}), written by an older layout of the evaluation sets; "
                         f"give another --out (see eval_set)")
    done = {name for name, r in have.items() if r.get("ok") or not retry_failed}
    todo = [(i, it) for i, it in enumerate(items) if it[0] not in done]
    # Rounds of networks whose block a stopped run did not finish: kept, so a large block (records spread over a
    # long time) loses nothing to a stop. Not with anchors, whose rounds belong to one run's block.
    rounds_file = partial_rounds_path(out)
    kept = {} if anchor else load_partial_rounds(rounds_file, {it for _, it in todo})
    with contextlib.ExitStack() as stack:
        prof = stack.enter_context(Profiler(backend, protocol=under_prefetch(protocol or Protocol())))
        tmp = stack.enter_context(tempfile.TemporaryDirectory())

        # the exports run in a child process replaced every few networks (TensorFlow's converter leaks)
        job, per_child = partial(_export_job, backend, tmp), EXPORTS_PER_CHILD.get(backend, 16)
        export = stack.enter_context(RecycledWorker(job, per_child, avoid_core=prof.core))
        helper = None
        if lend_core and quiet_rounds and rounds > 1 and prof.core is not None:  # only quiet waits lend the core
            helper = stack.enter_context(RecycledWorker(job, per_child, core=prof.core))

        anchor_path = None
        if anchor and todo:
            from .anchor import anchor_item

            a_item = anchor_item(backend)
            anchor_id = f"{a_item[1]}:{a_item[2]}"
            anchor_path = export((-1, a_item))

        def measure_anchor() -> float | None:
            m = prof.measure(anchor_path)
            return m.latency_ms if m.ok else None

        deadline = time.monotonic() + budget_s if budget_s else None
        prefetch = Prefetcher(export, todo, avoid_core=prof.core, depth=block, helper=helper)
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
                        rec.update(warnings=g.warnings, extrapolated=g.extrapolated,
                                   predicted_ms=g.latency_ms if g.latency_ms is not None else float("nan"))
                else:
                    rec = {"name": name, "space": space, "arch": arch, "flops": resolve(space, arch).flops(),
                           "predicted_ms": _predict_subnet(predictor, space, arch)}
                if isinstance(path, Exception):
                    rec.update(predicted_ms=rec.get("predicted_ms", float("nan")), measured_ms=None, stable=False,
                               ok=False, error=f"export failed: {type(path).__name__}: {path}")
                else:
                    rec.update(rounds_ms=[], stable=False, ok=True, error=None)
                    for r in kept.get(name, [])[:rounds]:
                        _add_round(rec, r["ms"], r["quiet"], r["probe_ms"], r["stable"])
                recs.append((i, rec, path))
            anchors: list[float | None] = []
            for rnd in range(rounds):  # interleaved: records of one network are a block's length apart
                quiet = rnd > 0 and quiet_rounds and prefetch.wait_idle(QUIET_WAIT_S)
                if anchor_path is not None:
                    anchors.append(measure_anchor())
                for _, rec, path in recs:
                    if not rec["ok"] or len(rec["rounds_ms"]) > rnd:  # export failed, or a stopped run measured it
                        continue
                    m = prof.measure(path)
                    if not m.ok:
                        rec.update(ok=False, error=m.error, measured_ms=None)
                        continue
                    _add_round(rec, m.latency_ms, bool(quiet), m.probe_ms, m.stable)
                    if not anchor:
                        with open(rounds_file, "a") as f:
                            f.write(json.dumps({"name": rec["name"], "space": rec["space"], "arch": rec["arch"],
                                                "ms": m.latency_ms, "quiet": bool(quiet), "probe_ms": m.probe_ms,
                                                "stable": m.stable}) + "\n")
            if anchor_path is not None:
                anchors.append(measure_anchor())
                for _, rec, _ in recs:
                    rec.update(anchor=anchor_id, anchor_rounds_ms=anchors)
            stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
            with open(out, "a") as f:
                for i, rec, path in recs:
                    rec["measured_at"] = stamp  # the machine's speed wanders over hours: keep when it was measured
                    if rec["ok"]:
                        rec["measured_ms"] = network_ms(rec["rounds_ms"])
                    if not isinstance(path, Exception):
                        path.unlink(missing_ok=True)
                    f.write(json.dumps(rec) + "\n")
                    if progress:
                        progress(i + 1, len(items), rec)
        else:  # every block written: no round is pending any more
            rounds_file.unlink(missing_ok=True)
    return out


ROUND_KEYS = ("name", "space", "arch", "ms", "quiet", "probe_ms", "stable")  # a line of results.rounds.jsonl


def partial_rounds_path(out: str | Path) -> Path:
    """Where :func:`evaluate` appends each round as it is measured, until the network's block is written to ``out``."""
    out = Path(out)
    return out.with_name(out.stem + ".rounds" + out.suffix)


def load_partial_rounds(path: Path, items: set[tuple[str, str, str]]) -> dict[str, list[dict]]:
    """The rounds a stopped run measured, by network name, for those of ``items`` (name, space, arch) only.

    A round of another subnet under the same name (another set layout) is not kept; a torn last line is skipped."""
    out: dict[str, list[dict]] = {}
    for r in read_json_lines(path):
        if all(k in r for k in ROUND_KEYS) and (r["name"], r["space"], r["arch"]) in items:
            out.setdefault(r["name"], []).append(r)
    return out


def _add_round(rec: dict, ms: float, quiet: bool, probe_ms: float | None, stable: bool) -> None:
    rec["rounds_ms"].append(ms)
    rec.setdefault("quiet_rounds", []).append(quiet)
    rec.setdefault("probe_ms", []).append(probe_ms)  # the machine's state in that round
    rec["stable"] = rec["stable"] or stable


def items_like(results: str | Path, measured_below_ms: float | None = None) -> list[tuple[str, str, str]]:
    """The networks of an earlier evaluation, in its order, to measure them again (with other rounds, another day).

    With ``measured_below_ms``, only those that run measured faster than that: on the Zen 4 host the networks under
    10 ms were the ones whose records did not reproduce across sessions (README, "Accuracy so far"), and re-measuring
    just them is how a protocol change for small networks is tried without hours of large ones."""
    recs = load_results(results)
    if not recs:
        raise ValueError(f"{results}: no records; give the results.jsonl of a `predictors eval` run")
    items = []
    for name, r in recs.items():
        if measured_below_ms is not None and not (r.get("ok") and r.get("measured_ms")
                                                  and r["measured_ms"] < measured_below_ms):
            continue
        items.append((name, r.get("space") or "", r.get("arch") or ""))
    return items


def select_records(path: str | Path, records: slice) -> dict[str, dict]:
    """An evaluation's results as if it had kept only some of each network's records, e.g. ``slice(0, 3)``.

    Why: a run with 6 rounds answers what 3 would have given (the first three), and how two estimates of the same
    protocol in one session agree (records 0-2 against 3-5), from one set of measurements. ``measured_ms`` is the
    fastest kept record, as in :func:`evaluate`; a network with no record in the slice is left out."""
    out: dict[str, dict] = {}
    for name, r in load_results(path).items():
        if not r.get("ok") or not r.get("rounds_ms"):
            continue
        kept = r["rounds_ms"][records]
        if not kept:
            continue
        r = dict(r, rounds_ms=kept, measured_ms=network_ms(kept))
        for key in ("probe_ms", "quiet_rounds"):
            if isinstance(r.get(key), list):
                r[key] = r[key][records]
        r.pop("anchor_rounds_ms", None)  # anchors bracket all rounds: no longer paired with the kept ones
        r.pop("anchor", None)
        out[name] = r
    return out


def parse_utc(text: str) -> datetime:
    """An ISO 8601 time (e.g. 2026-12-07T15:00 or 2026-12-07T15:00:00+00:00), read as UTC when it names no zone,
    as every ``measured_at`` of an evaluation is written."""
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def select_measured(path: str | Path, since: datetime | None = None, until: datetime | None = None) -> dict[str, dict]:
    """An evaluation's networks measured at or after ``since`` and before ``until`` (by ``measured_at``).

    Why: one results file can hold several sessions of a shared VM, each in its own machine state (on the Zen 3
    host the probe read 0.51 ms in one session and 0.37 ms in the next), and the figure for one session, judged
    in that session's state, is a different question from the pooled one. A network without ``measured_at`` (a
    failed export) is left out."""
    out: dict[str, dict] = {}
    for name, r in load_results(path).items():
        if not r.get("measured_at"):
            continue
        t = parse_utc(r["measured_at"])
        if (since is None or t >= since) and (until is None or t < until):
            out[name] = r
    return out


def write_results(recs: Iterable[dict], out: str | Path) -> Path:
    """Records as an evaluation's results.jsonl (one JSON object a line), for every path that derives one."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return out


class ResultsClash(ValueError):
    """A results file holds another subnet under a name the evaluation set gives now (see :func:`eval_set`)."""


def load_results(path: str | Path) -> dict[str, dict]:
    """An evaluation's records by network name; a later record of a name (a retry) replaces an earlier one.

    A torn last line from a killed run is skipped."""
    recs: dict[str, dict] = {}
    for r in read_json_lines(Path(path)):
        try:
            recs[r["name"]] = r
        except (KeyError, TypeError):
            pass
    return recs


def read_json_lines(path: Path) -> Iterator[dict]:
    """The JSON objects of a JSON-lines file, none if it does not exist; a torn line (a killed run's last) is skipped."""
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(r, dict):
                yield r


def pool_results(paths: list[str | Path]) -> dict[str, dict]:
    """Several measurement runs of the same networks as one: each network keeps its fastest record.

    The fastest record is the estimator a run already uses across its rounds; pooling runs from different
    sessions extends it across the machine's states. On the Zen 4 VM onnxruntime ran the same 80 networks about
    10% faster in one session than in another hours earlier (README, "Accuracy so far"), more than any within-run
    spread, so a calibration fitted to one session's records carries that session's state. A network's pooled record keeps
    every run's rounds in ``rounds_ms`` and says how many runs measured it in ``runs``."""
    pooled: dict[str, dict] = {}
    for path in paths:
        for name, r in load_results(path).items():
            if not (r.get("ok") and r.get("measured_ms")):
                pooled.setdefault(name, r)  # a failure only where no run measured the network
                continue
            best = pooled.get(name)
            if best is None or not best.get("ok"):
                pooled[name] = dict(r, runs=1)
            else:
                rounds = best.get("rounds_ms", []) + r.get("rounds_ms", [])
                keep = r if r["measured_ms"] < best["measured_ms"] else best
                pooled[name] = dict(keep, rounds_ms=rounds, runs=best["runs"] + 1)
    return pooled


def _groups(recs: list[dict]) -> dict[str, list[dict]]:
    """The report's sets: all, per set kind and hyperspace, SEQnets, keras.applications."""
    groups = {"all": recs}
    for kind in SETS:  # names are <hyperspace>-<set>-<i>; "calib" must not take the "calib-small" ones
        rs_k = [r for r in recs if re.fullmatch(rf"[^-]+-{kind}-\d+", r["name"])]
        if rs_k:
            groups[kind] = rs_k
            for h in sorted({r["name"].split(f"-{kind}-")[0] for r in rs_k}):
                groups[f"{kind} {h}"] = [r for r in rs_k if r["name"].startswith(f"{h}-{kind}-")]
    groups.update({"SEQnets": [r for r in recs if r["name"].startswith("SEQnet")],
                   "keras.applications": [r for r in recs if r["name"].startswith("keras:")]})
    return {g: rs for g, rs in groups.items() if rs}


def _metrics(rs: list[dict]) -> dict:
    return metrics(np.array([r["measured_ms"] for r in rs]), np.array([r["predicted_ms"] for r in rs]))


def report(results: str | Path, out_dir: str | Path, title: str, anchor_ref_ms: float | None = None,
           probe_ref_ms: float | None = None) -> dict:
    """Summary per set of ``results`` (also written as summary.json, report.md and scatter.png in ``out_dir``).

    Records measured beside an anchor (:mod:`predictors.anchor`) are also judged *anchored*: groups named
    ``anchored <set>``, against ``anchor_ref_ms`` (the predictor's calibration's) or, without it, this set's
    median anchor. Records with a reference probe per round are also judged *probe-normalized*
    (:mod:`predictors.speed`): groups named ``probe-normalized <set>``, at ``probe_ref_ms`` (the median probe of
    the predictor's calibration set) or, without it, this set's median probe. Both are diagnostics beside the
    measured groups, which stay the figures a predictor is judged by."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import anchor as anc
    from . import speed

    recs = [r for r in load_results(results).values() if r["ok"] and r["measured_ms"] and np.isfinite(r["predicted_ms"])]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = _groups(recs)
    summary = {g: _metrics(rs) for g, rs in groups.items()}
    spreads = np.array([max(r["rounds_ms"]) / min(r["rounds_ms"]) - 1 for r in recs if len(r.get("rounds_ms") or []) > 1])
    if len(spreads):  # how repeatable the ground truth itself is: a floor under any predictor's error
        summary[NOISE] = {"n": int(len(spreads)), "rounds": int(np.median([len(r["rounds_ms"]) for r in recs
                                                                           if r.get("rounds_ms")])),
                          "spread_median": float(np.median(spreads)), "spread_p90": float(np.percentile(spreads, 90)),
                          "within10": float(np.mean(spreads <= 0.10))}
    anchored = _judge_normalized(recs, summary, ANCHORED, ANCHOR, "this set's median anchor", anc.ratio,
                                 anc.reference_ms, anc.anchored_ms, anchor_ref_ms)
    if anchored:
        vals = [v for r in anchored["all"] for v in anc.brackets(r["anchor_rounds_ms"]) if np.isfinite(v)]
        summary[ANCHOR].update(anchor_p10_ms=float(np.percentile(vals, 10)), anchor_p90_ms=float(np.percentile(vals, 90)))
    normalized = _judge_normalized(recs, summary, NORMALIZED, PROBE, "this set's median probe", speed.probe_ratio,
                                   speed.reference_probe_ms, speed.normalized_ms, probe_ref_ms)
    drift = drift_blocks(recs)
    if drift:
        summary[DRIFT] = {k: v for k, v in drift.items() if k not in ("curve", "probe_curve")}
    panels = ([("measured", groups)] + ([("anchored", anchored)] if anchored else [])
              + ([(NORMALIZED, normalized)] if normalized else []))
    fig, axes = plt.subplots(1, len(panels) + bool(drift), figsize=(4.5 * (len(panels) + bool(drift)), 4.5),
                             squeeze=False)
    if drift:
        _plot_drift(axes[0][-1], recs, drift)
    for ax, (label, gs) in zip(axes[0], panels):
        rs_all = gs["all"]
        for g, marker in PLOT_SETS:
            rs = gs.get(g)
            if rs:
                ax.scatter([r["measured_ms"] for r in rs], [r["predicted_ms"] for r in rs],
                           s=12 if g in ("random", "calib", "calib-small") else 60, marker=marker, label=g, alpha=0.7)
        lim = max([r["measured_ms"] for r in rs_all] + [r["predicted_ms"] for r in rs_all] + [1])
        ax.plot([0, lim], [0, lim], "k-", lw=0.8)
        ax.fill_between([0, lim], [0, 0.9 * lim], [0, 1.1 * lim], color="grey", alpha=0.15, label="+-10%")
        ax.set_xlabel(f"{label} INT8 latency (ms)" + (" (anchor = %.2f ms)" % summary[ANCHOR]["ref_ms"]
                                                     if label == "anchored" else "")
                      + (" (probe = %.3f ms)" % summary[PROBE]["ref_ms"] if label == NORMALIZED else ""))
        ax.set_ylabel("predicted (ms)")
        ax.legend()
    fig.suptitle(textwrap.fill(title, 52 * len(panels)), fontsize=8)  # a long device name must not be cut off
    fig.tight_layout()
    fig.savefig(out_dir / "scatter.png", dpi=80)
    plt.close(fig)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    (out_dir / "report.md").write_text(report_markdown(summary, title))
    return summary


def _judge_normalized(recs: list[dict], summary: dict, label: str, key: str, own_source: str, ratio, reference,
                      normalized, ref_ms: float | None) -> dict[str, list[dict]]:
    """Judge the records that ``ratio`` covers again, each latency ``normalized`` at ``ref_ms`` (the calibration's)
    or, without it, at this set's own ``reference``: adds ``<label> <set>`` metrics and ``summary[key]`` (the
    reference used) and returns the groups, empty when no record is covered. The anchor network
    (:mod:`predictors.anchor`) and the reference probe (:mod:`predictors.speed`) are two such normalizers."""
    covered = [r for r in recs if ratio(r) is not None]
    if not covered:
        return {}
    own = reference(covered)
    ref = ref_ms or own
    groups = _groups([dict(r, measured_ms=normalized(r, ref)) for r in covered])
    summary.update({f"{label} {g}": _metrics(rs) for g, rs in groups.items()})
    summary[key] = {"n": len(covered), "ref_ms": ref, "ref_source": "calibration" if ref_ms else own_source,
                    "this_set_median_ms": own}
    return groups


def drift_blocks(recs: list[dict], block: int = DRIFT_BLOCK) -> dict | None:
    """The median error of each run of ``block`` networks in measurement order (the results file's order).

    A predictor errs per network; a machine that changes speed makes every network measured in the same
    minutes err the same way. On the shared VMs of this project onnxruntime moved by up to 10% between sessions
    and by several % within one, so a report shows how the error wanders over the run: a flat curve says the
    ground truth held still; a curve that walks says part of the figure belongs to the machine, not the predictor.
    None when there are fewer than two blocks."""
    rel = _relative_errors(recs)
    n_blocks = len(rel) // block
    if n_blocks < 2:
        return None
    blocks = rel[:n_blocks * block].reshape(n_blocks, block)  # a last, partial block is left out
    med = np.median(blocks, axis=1)
    removed = blocks - med[:, None]
    out = {"block": block, "blocks": int(n_blocks), "median_error_min": float(med.min()),
           "median_error_max": float(med.max()), "median_error_sd": float(med.std()),
           "acc10_block_median_removed": float(np.mean(np.abs(removed) <= 0.10)), "curve": med.tolist()}
    # The machine's speed in the same blocks, from the reference probe of every round (predictors/speed.py), where
    # each block has one: when the error walks with it, the walk is the machine's.
    probes = [[v for r in recs[i * block:(i + 1) * block] for v in (r.get("probe_ms") or []) if v]
              for i in range(n_blocks)]
    if all(probes):
        pc = np.array([np.median(p) for p in probes])
        speed = _probe_speed(pc)
        out["probe_curve"] = pc.tolist()
        if pc.std() > 0 and med.std() > 0:
            # a slower machine (speed < 0) makes networks measure slower, so predicted/measured - 1 drops with it
            out["probe_error_corr"] = float(np.corrcoef(speed, med)[0, 1])
    return out


def _probe_speed(probe_curve) -> np.ndarray:
    """Each block's machine speed relative to the run's median block (+ when faster), from its median probe."""
    pc = np.asarray(probe_curve, float)
    return np.median(pc) / pc - 1


def _relative_errors(recs: list[dict]) -> np.ndarray:
    return np.array([r["predicted_ms"] / r["measured_ms"] - 1 for r in recs])


def _plot_drift(ax, recs: list[dict], drift: dict) -> None:
    """Error of each network against the order it was measured in, with each block's median and, where rounds kept
    their reference probe, the machine's speed in each block (the run's median probe over the block's, in %): the
    two curves walking together is the machine changing speed."""
    rel = 100 * _relative_errors(recs)
    ax.scatter(np.arange(len(rel)), rel, s=6, alpha=0.4, label="network")
    b = drift["block"]
    xs = [i * b + b / 2 for i in range(drift["blocks"])]
    ax.plot(xs, 100 * np.array(drift["curve"]), "r-", lw=1.5, label=f"median of each {b}")
    if drift.get("probe_curve"):
        ax.plot(xs, 100 * _probe_speed(drift["probe_curve"]), "g--", lw=1.2, label="machine speed (probe), vs run median")
    ax.axhspan(-10, 10, color="grey", alpha=0.15, label="+-10%")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("networks in measurement order")
    ax.set_ylabel("predicted / measured - 1 (%)")
    ax.legend(fontsize=7)


NOISE = "measurement noise"
DRIFT = "drift over the run"
ANCHORED = "anchored"
ANCHOR = "anchor"
NORMALIZED = "probe-normalized"
LOCAL = "local drift removed"
PROBE = "reference probe"
PAPER_ACC10 = {"SpaceEvo, VNNI CPU (onnxruntime)": 0.925, "SpaceEvo, Pixel 4 (TFLite)": 1.0,
               "nn-Meter, Pixel 4 CPU (TFLite FP32)": 0.990}


def report_markdown(summary: dict, title: str) -> str:
    """The evaluation as a table, beside the published +-10% accuracies it is compared with."""
    rows = ["| set | n | RMSE (ms) | RMSPE | within ±5% | within ±10% |", "|---|---|---|---|---|---|"]
    for g, m in summary.items():
        if g in (NOISE, ANCHOR, DRIFT, PROBE):
            continue
        rows.append(f"| {g} | {m['n']} | {m['rmse_ms']:.3f} | {m['rmspe']:.3f} | {m['acc5']:.1%} | {m['acc10']:.1%} |")
    if NOISE in summary:
        z = summary[NOISE]
        rows += ["", f"Repeatability of the measurements ({z['n']} networks, {z['rounds']} records each, interleaved): "
                 f"(slowest - fastest) / fastest has median {z['spread_median']:.1%} and p90 {z['spread_p90']:.1%}; "
                 f"{z['within10']:.1%} of networks have all their records within 10%."]
    if DRIFT in summary:
        z = summary[DRIFT]
        rows += ["", f"Drift over the run ({z['blocks']} blocks of {z['block']} networks in measurement order): the "
                 f"median error of a block ranged from {z['median_error_min']:+.1%} to {z['median_error_max']:+.1%} "
                 f"(SD {z['median_error_sd']:.1%}); with each block's median divided out, {z['acc10_block_median_removed']:.1%} "
                 "would be within ±10%. A walking curve in the right-hand plot is the machine changing speed, "
                 "not the predictor."
                 + (f" The blocks' median error and the machine's speed from the reference probe (green, dashed) "
                    f"correlate {z['probe_error_corr']:+.2f} over the blocks." if "probe_error_corr" in z else "")]
    if ANCHOR in summary:
        z = summary[ANCHOR]
        rows += ["", f"`{ANCHORED}` rows: each network's rounds divided by the anchor network measured in the same "
                 f"minutes, times {z['ref_ms']:.3f} ms ({z['ref_source']}); over this set the anchor measured "
                 f"{z['anchor_p10_ms']:.3f} to {z['anchor_p90_ms']:.3f} ms (p10 to p90). See predictors/anchor.py."]
    if PROBE in summary:
        z = summary[PROBE]
        rows += ["", f"`{NORMALIZED}` rows ({z['n']} networks), a diagnostic beside the measured rows: each network's "
                 f"fastest round over the reference probe measured right after it, times {z['ref_ms']:.4f} ms "
                 f"({z['ref_source']}" + (f"; this set's median probe: {z['this_set_median_ms']:.4f} ms"
                                           if z["ref_source"] == "calibration" else "") + "). They say how much "
                 "of the error is the machine's speed in those minutes. See predictors/speed.py."]
    rows += ["", "Published, within ±10%: " + "; ".join(f"{k} {v:.1%}" for k, v in PAPER_ACC10.items()) + "."]
    return f"# {title}\n\n" + "\n".join(rows) + "\n\n![predicted vs measured](scatter.png)\n"


def agreement(first: str | Path, second: str | Path, records: tuple[slice | None, slice | None] = (None, None)) -> dict:
    """How two measurement runs of the same networks agree: the ceiling of any predictor's accuracy.

    A predictor is judged against measurements; if the same networks, measured again by the same protocol
    some minutes later, agree within +-10% only so often, no predictor can be shown to do better against
    either run. ``drift`` is the median ratio second/first (the machine as a whole got faster or slower);
    ``*_drift_removed`` are the shares after dividing it out. Where both runs were measured beside an anchor
    network, ``anchored`` holds the same figures for anchored latencies, both at the first run's median anchor:
    only the anchor, not the data's own median, corrects the second run for the machine's state. Where both
    runs kept a reference probe per round, ``probe-normalized`` holds them for probe-normalized latencies
    (:mod:`predictors.speed`), both at the first run's median probe. ``records`` keeps only those records of each
    network in the first and in the second run (:func:`select_records`); the two may be the same file.
    ``local drift removed`` divides out the drift of each stretch of 16 networks instead (:func:`local_drift`)."""
    from . import anchor as anc
    from . import speed

    ra, rb = (load_results(x) if sl is None else select_records(x, sl) for x, sl in zip((first, second), records))
    a, b = ({n: r["measured_ms"] for n, r in rs.items() if r.get("ok") and r.get("measured_ms")} for rs in (ra, rb))
    # a name means the same subnet only since eval_set's fixed layout; older files may hold another one under it
    names = sorted(n for n in set(a) & set(b) if (ra[n].get("space"), ra[n].get("arch")) == (rb[n].get("space"),
                                                                                          rb[n].get("arch")))
    if len(names) < 2:
        raise ValueError(f"agreement: {first} and {second} share {len(names)} measured networks; at least 2 are needed")

    def figures(x: np.ndarray) -> dict:
        drift = float(np.median(x))
        rel, rel_d = x - 1, x / drift - 1
        return {"n": len(x), "drift": drift, "rmspe": float(np.sqrt(np.mean(rel ** 2))),
                "acc5": float(np.mean(np.abs(rel) <= 0.05)), "acc10": float(np.mean(np.abs(rel) <= 0.10)),
                "acc5_drift_removed": float(np.mean(np.abs(rel_d) <= 0.05)),
                "acc10_drift_removed": float(np.mean(np.abs(rel_d) <= 0.10))}

    ratio = {n: b[n] / a[n] for n in names}
    out = figures(np.array(list(ratio.values())))
    out[LOCAL] = local_drift([ratio[n] for n in rb if n in ratio])  # in the second run's order
    for label, ratio, reference in ((ANCHORED, anc.ratio, anc.reference_ms),
                                    (NORMALIZED, speed.probe_ratio, speed.reference_probe_ms)):
        both = [n for n in names if ratio(ra[n]) is not None and ratio(rb[n]) is not None]
        if len(both) >= 2:
            out[label] = dict(figures(np.array([ratio(rb[n]) / ratio(ra[n]) for n in both])),
                              ref_ms=reference([ra[n] for n in both]))
    return out


def local_drift(ratios: list[float], block: int = DRIFT_BLOCK) -> dict:
    """Agreement with the drift of each stretch of about ``block`` consecutive networks divided out, not the run's.

    ``ratios`` are second/first per network in the order the second run measured them. Where the whole-run drift
    leaves networks outside +-10% and this does not, the two runs differ by machine states that last a few
    minutes (a stretch of 16 small networks with 3 records each is about 2 minutes on the Zen 4 host), not by
    each network's own noise: records spread over longer than such a state can sample past it, more records in
    the same minutes cannot. A last stretch is never shorter than half a block (it joins the one before)."""
    x = np.asarray(ratios, float)
    k = max(1, int(round(len(x) / block)))
    parts = np.array_split(x, k)
    med = np.array([np.median(p) for p in parts])
    rel = np.concatenate([p / m for p, m in zip(parts, med)]) - 1
    return {"block": block, "blocks": k, "drift_min": float(med.min()), "drift_max": float(med.max()),
            "acc5": float(np.mean(np.abs(rel) <= 0.05)), "acc10": float(np.mean(np.abs(rel) <= 0.10))}


def predict_subnets(predictor: Predictor, subnets: dict[Hashable, tuple[str, str]]) -> dict[Hashable, float]:
    """key (a name, or a record index in :func:`repredict`) -> predicted ms of (space, arch), NaN where a kernel type
    is unknown; the kernel-list path of
    ``predictors predict``. Why not :class:`LayerTable`: it tabulates every option of a space, about a second per
    space, and an evaluation's random subnets each come from their own space (610 spaces: minutes; a re-prediction
    of Intel f6m167's 304 LiteRT networks took over 5 minutes). Here every distinct kernel of all the subnets goes
    through its forest in one batch first."""
    kernels = {n: [KernelConfig.from_kernel(k) for k in resolve(sp, arch).kernels()] for n, (sp, arch) in subnets.items()}
    predictor.predict_kernels([k for ks in kernels.values() for k in ks])  # fills the predictor's config cache
    out = {}
    for n, ks in kernels.items():
        ms = predict_kernel_list(predictor, ks).latency_ms
        out[n] = float("nan") if ms is None else ms
    return out


def _predict_subnet(predictor: Predictor | None, space: str, arch: str) -> float | None:
    """Predicted latency of one subnet. None without a predictor (a device agent measuring a session's calibration
    networks has none: the server fits them)."""
    if predictor is None:
        return None
    return predict_subnets(predictor, {"_": (space, arch)})["_"]


def repredict(predictor: Predictor, results: str | Path, out: str | Path) -> Path:
    """Re-predict already measured subnets with another predictor (no new measurements).

    Measuring is the expensive part of an evaluation; a predictor change is judged on the same
    measured set by rewriting ``predicted_ms`` into ``out``."""
    recs = list(read_json_lines(Path(results)))  # a killed run's torn last line is skipped, as a report skips it
    predicted = predict_subnets(predictor, {i: (r["space"], r["arch"]) for i, r in enumerate(recs) if r.get("space")})
    for i, ms in predicted.items():
        recs[i]["predicted_ms"] = ms
    return write_results(recs, out)
