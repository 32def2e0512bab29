"""The block-wise KD accuracy lookup table (LUT) of a hyperspace, as numpy arrays.

SpaceEvo rates a search space without training it: every elastic-stage candidate
(stage S, block digit B, width window W) was trained once by block-wise knowledge distillation and
~1,000 of its stage architectures were stored with their INT8 NSR loss and predicted INT8 latency in
``stage{S}_{B}_{W}.csv``. A subnet's loss is the sum of its stages' losses and its latency the sum of
its stages' latencies plus the fixed parts (first_conv, stage0, head), which the table does not hold.

The reference (microsoft/Moonlit ``modules/block_kd/search/lut.py``) keys rows by *input resolution*:
a stage row was measured with one input feature map, and ``H * 2**n`` tells which network input
resolution (160, 192 or 224) it belongs to. A subnet at resolution ``r`` may only combine rows of
resolution ``r``. We keep each candidate's rows sorted by resolution so that "rows of candidate c at
resolution r" is one contiguous slice: sampling is then one integer draw per stage, no masks.

The files are read from the shared data folder at run time (never copied into the repository).
Each file passes a pydantic model (column-wise, for speed), so a malformed file ends with its name, line and field.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from spaces import HyperSpace, SearchSpace, get_hyperspace

#: Network input resolutions the reference LUT was built for (``LUT.resolution_list``).
LUT_RESOLUTIONS: tuple[int, ...] = (160, 192, 224)
_ROW_FIELDS = ("stage_arch", "input_shape", "nsr_loss", "mflops", "mparams", "pred_int8_ms")


class LutError(ValueError):
    """A LUT folder, file or row that cannot be used; the message names the path and what is expected."""


_StageArch = Annotated[str, Field(pattern=r"^\d+#\d+#[^_#]+(_\d+#\d+#[^_#]+)*$")]
_InputShape = Annotated[str, Field(pattern=r"^1x\d+x\d+x\d+$")]
_NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]
_Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class LutColumns(BaseModel):
    """One stage CSV (no header), validated column-wise so that 1,000-row files load in milliseconds.

    ``stage_arch``: ``k#w#e`` per layer joined by ``_`` (e.g. ``5#32#4_3#48#4``); ``input_shape``:
    ``1xCxHxW`` of the stage input; ``nsr_loss``: INT8 noise-to-signal ratio against the teacher (lower
    is better); ``pred_int8_ms``: the paper predictor's INT8 stage latency.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    stage_arch: list[_StageArch]
    input_shape: list[_InputShape]
    nsr_loss: list[_NonNeg]
    mflops: list[_NonNeg]
    mparams: list[_NonNeg]
    pred_int8_ms: list[_Positive]


def resolution_of(hw: int, resolutions: tuple[int, ...] = LUT_RESOLUTIONS) -> int:
    """The network input resolution ``r`` with ``hw * 2**n == r`` (the README's rule).

    160, 192 and 224 have distinct odd parts (5, 3, 7), so the answer is unique.
    """
    for r in resolutions:
        for n in range(6):
            if hw << n == r:
                return r
    raise LutError(f"input height {hw} is no resolution of {list(resolutions)} divided by a power of two")


@dataclass(frozen=True)
class StageTable:
    """All rows of one elastic-stage candidate, sorted by resolution (stable: file order within one).

    ``slices[r]`` is the ``(start, stop)`` row range of resolution ``r``.
    """

    stage: int
    block: int
    window: int
    path: Path
    nsr_loss: np.ndarray      # float32 [rows]
    pred_int8_ms: np.ndarray  # float32 [rows]
    mflops: np.ndarray        # float32 [rows]
    resolution: np.ndarray    # int32 [rows]
    stage_arch: tuple[str, ...]
    input_shape: tuple[str, ...]
    slices: dict[int, tuple[int, int]] = field(repr=False)

    @property
    def name(self) -> str:
        return f"stage{self.stage}_{self.block}_{self.window}"

    def __len__(self) -> int:
        return len(self.nsr_loss)

    def rows_at(self, resolution: int) -> slice:
        start, stop = self.slices[resolution]
        return slice(start, stop)

    def min_ms(self, resolution: int) -> float:
        return float(self.pred_int8_ms[self.rows_at(resolution)].min())


def lut_file_name(stage: int, block: int, window: int) -> str:
    return f"stage{stage}_{block}_{window}.csv"


def expected_files(hs: HyperSpace) -> list[tuple[int, int, int]]:
    """Every (stage, block, window) of the hyperspace: one CSV each."""
    return [(s, b.digit, w) for s, st in enumerate(hs.stages, start=1) for b in hs.blocks
            for w in range(st.num_windows)]


def _read_table(path: Path, stage: int, block: int, window: int, resolutions: tuple[int, ...]) -> StageTable:
    lines: list[int] = []
    records: list[list[str]] = []
    with path.open(newline="") as f:
        for lineno, values in enumerate(csv.reader(f), start=1):
            if not values or all(not v.strip() for v in values):
                continue
            if len(values) != len(_ROW_FIELDS):
                raise LutError(f"{path}:{lineno}: {len(values)} fields; expected {len(_ROW_FIELDS)}: "
                               f"{', '.join(_ROW_FIELDS)} (no header)")
            lines.append(lineno)
            records.append([v.strip() for v in values])
    if not records:
        raise LutError(f"{path}: no rows; expected lines '{','.join(_ROW_FIELDS)}'")
    try:
        cols = LutColumns.model_validate({name: list(col) for name, col in zip(_ROW_FIELDS, zip(*records))})
    except ValidationError as e:
        err = e.errors()[0]
        name, idx = err["loc"][0], err["loc"][1] if len(err["loc"]) > 1 else 0
        raise LutError(f"{path}:{lines[int(idx)]}: field {name!r}: {err['msg']} (got {err.get('input')!r})") from None
    try:
        hw_res = {shape: resolution_of(int(shape.split("x")[2]), resolutions) for shape in set(cols.input_shape)}
        res = np.array([hw_res[shape] for shape in cols.input_shape], dtype=np.int32)
    except LutError as e:
        raise LutError(f"{path}: {e}") from None
    order = np.argsort(res, kind="stable")
    res = res[order]
    slices: dict[int, tuple[int, int]] = {}
    for r in resolutions:
        start, stop = int(np.searchsorted(res, r, "left")), int(np.searchsorted(res, r, "right"))
        if start == stop:
            raise LutError(f"{path}: no rows at input resolution {r}; every candidate needs rows at "
                           f"{list(resolutions)} so a subnet at any resolution can be sampled")
        slices[r] = (start, stop)
    f32 = lambda xs: np.asarray(xs, dtype=np.float32)[order]  # noqa: E731
    return StageTable(stage, block, window, path, f32(cols.nsr_loss), f32(cols.pred_int8_ms), f32(cols.mflops), res,
                      tuple(cols.stage_arch[i] for i in order), tuple(cols.input_shape[i] for i in order), slices)


@dataclass(frozen=True)
class BlockLut:
    """The LUT of one hyperspace: one :class:`StageTable` per (stage, block, window)."""

    hyperspace: HyperSpace
    folder: Path
    tables: dict[tuple[int, int, int], StageTable]
    resolutions: tuple[int, ...] = LUT_RESOLUTIONS

    def table(self, stage: int, block: int, window: int) -> StageTable:
        try:
            return self.tables[(stage, block, window)]
        except KeyError:
            raise LutError(f"no LUT table {lut_file_name(stage, block, window)} in {self.folder}") from None

    def space_tables(self, space: SearchSpace) -> list[StageTable]:
        """The six stage tables a search space draws its stage rows from."""
        if space.hyperspace.name != self.hyperspace.name:
            raise LutError(f"space {space} is not in hyperspace {self.hyperspace.name} of the LUT {self.folder}")
        return [self.table(s, b, w) for s, (b, w) in enumerate(zip(space.blocks, space.windows), start=1)]

    def space_min_ms(self, space: SearchSpace, fixed_ms: dict[int, float]) -> float:
        """Smallest latency a subnet of ``space`` can have in the LUT (over resolutions)."""
        tables = self.space_tables(space)
        return min(fixed_ms[r] + sum(t.min_ms(r) for t in tables) for r in self.resolutions)

    def min_reachable_ms(self, fixed_ms: dict[int, float]) -> tuple[float, int]:
        """Smallest latency of any subnet of any search space of the hyperspace, and its resolution.

        Per resolution: the fixed part plus, per stage, the minimum over all candidates of that stage.
        """
        best: tuple[float, int] | None = None
        for r in self.resolutions:
            total = fixed_ms[r]
            for s in range(1, len(self.hyperspace.stages) + 1):
                total += min(t.min_ms(r) for (ts, _, _), t in self.tables.items() if ts == s)
            if best is None or total < best[0]:
                best = (total, r)
        assert best is not None
        return best


def default_lut_root() -> Path:
    """``$HIL_SHARED_DATA/spaceevo_block_lut``, else ``<repo>/../shared/data/spaceevo_block_lut``."""
    shared = os.environ.get("HIL_SHARED_DATA")
    base = Path(shared) if shared else Path(__file__).resolve().parents[2] / "shared" / "data"
    return base / "spaceevo_block_lut"


def resolve_lut_dir(hyperspace: str | HyperSpace, lut_dir: str | Path | None = None) -> Path:
    """The folder holding the stage CSVs of ``hyperspace``.

    ``lut_dir`` may be the LUT root (with ``onnxw/`` and ``mobilew/`` inside, like the shared data) or
    the hyperspace's folder itself.
    """
    hs = get_hyperspace(hyperspace) if isinstance(hyperspace, str) else hyperspace
    root = Path(lut_dir) if lut_dir is not None else default_lut_root()
    if not root.is_dir():
        hint = "" if lut_dir is not None else " (set HIL_SHARED_DATA to the shared data folder or pass --lut-dir)"
        raise LutError(f"LUT folder {root} does not exist; expected a folder with {hs.name}/stage{{S}}_{{BLOCK}}_"
                       f"{{WINDOW}}.csv files, or those files directly{hint}")
    if (root / hs.name).is_dir():
        return root / hs.name
    if any(root.glob("stage*_*_*.csv")):
        return root
    raise LutError(f"LUT folder {root} has neither a {hs.name}/ subfolder nor stage{{S}}_{{BLOCK}}_{{WINDOW}}.csv "
                   f"files; expected the block-wise KD lookup tables of hyperspace {hs.name}")


def load_lut(hyperspace: str | HyperSpace, lut_dir: str | Path | None = None) -> BlockLut:
    """Read and validate every stage table of ``hyperspace`` (all must be present)."""
    hs = get_hyperspace(hyperspace) if isinstance(hyperspace, str) else hyperspace
    folder = resolve_lut_dir(hs, lut_dir).resolve()
    # Memoised per process (tests and repeated CLI calls), keyed on the files' size and mtime so an edited,
    # added or removed file is read again.
    signature = tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.glob("*.csv")))
    return _load_cached(hs.name, str(folder), signature)


@lru_cache(maxsize=4)
def _load_cached(hs_name: str, folder_s: str, _signature: tuple) -> BlockLut:
    hs, folder = get_hyperspace(hs_name), Path(folder_s)
    wanted = expected_files(hs)
    missing = [lut_file_name(*k) for k in wanted if not (folder / lut_file_name(*k)).is_file()]
    if missing:
        shown = ", ".join(missing[:8]) + (f", ... ({len(missing)} missing in all)" if len(missing) > 8 else "")
        raise LutError(f"LUT folder {folder} lacks {len(missing)} of the {len(wanted)} stage tables of hyperspace "
                       f"{hs.name}: {shown}; expected one stage{{S}}_{{BLOCK}}_{{WINDOW}}.csv per stage 1-6, block "
                       f"digit and width window")
    tables = {k: _read_table(folder / lut_file_name(*k), *k, LUT_RESOLUTIONS) for k in wanted}
    return BlockLut(hs, folder, tables)
