"""String encodings of search spaces and subnets, exactly as the SpaceEvo reference prints them.

* search space: ``<hyperspace>-<6 block digits>-<6 window digits>``, e.g. ``onnxw-151122-023231``
* subnet: ``d<8 depths>_k<kernels>_w<widths>_e<expands>_r<resolution>`` with ``#`` between values,
  depths over first_conv, stage0, stage1..6, one k/w/e per layer, ``e0`` where there is no expand ratio.

Parsing is strict (every malformed part raises :class:`SpaceError` naming it) and printing is the
reference's canonical form, so ``parse(s).to_string() == s`` for every published string.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from .errors import SpaceError
from .hyperspace import STAGE_NAMES, HyperSpace, get_hyperspace

_SPACE_RE = re.compile(r"^([a-z0-9]+)-(\d{6})-(\d{6})$")
_NUM_STAGES = len(STAGE_NAMES)


def format_expand(e: float) -> str:
    """The reference prints ``float(e)`` for real ratios and ``0`` for 'no expand ratio'."""
    return "0" if not e else str(float(e))


class StageChoices(NamedTuple):
    """What one stage (first_conv, stage0, stage1..6) of a search space lets a subnet choose."""

    name: str
    block: "object"  # spaces.hyperspace.BlockType
    widths: tuple[int, ...]
    kernels: tuple[int, ...]
    expands: tuple[float, ...]  # (0.0,) where the block has no expand ratio
    depths: tuple[int, ...]
    stride: int


@dataclass(frozen=True)
class SearchSpace:
    """A point of the hyperspace: a block type and a width window for each of the six elastic stages."""

    hyperspace: HyperSpace
    blocks: tuple[int, ...]
    windows: tuple[int, ...]

    def __post_init__(self) -> None:
        hs = self.hyperspace
        if len(self.blocks) != len(hs.stages):
            raise SpaceError("search space blocks", "".join(map(str, self.blocks)), "6 digits")
        if len(self.windows) != len(hs.stages):
            raise SpaceError("search space windows", "".join(map(str, self.windows)), "6 digits")
        for stage, d, c in zip(hs.stages, self.blocks, self.windows):
            if not 0 <= d < len(hs.blocks):
                raise SpaceError(f"{stage.name} block digit", d, [f"{b.digit}={b.name}" for b in hs.blocks])
            stage.window(c)  # raises with the allowed windows

    @classmethod
    def parse(cls, text: str) -> "SearchSpace":
        if not isinstance(text, str):
            raise SpaceError("space", text, "a string like 'onnxw-151122-023231'")
        m = _SPACE_RE.match(text.strip())
        if not m:
            raise SpaceError("space", text, "'<hyperspace>-<6 block digits>-<6 window digits>', "
                             "e.g. 'onnxw-151122-023231'")
        hs = get_hyperspace(m.group(1))
        return cls(hs, tuple(int(c) for c in m.group(2)), tuple(int(c) for c in m.group(3)))

    def to_string(self) -> str:
        return f"{self.hyperspace.name}-{''.join(map(str, self.blocks))}-{''.join(map(str, self.windows))}"

    __str__ = to_string

    def stage_block(self, i: int):
        """Block type of elastic stage ``i`` (1-based, as in ``stage1``..``stage6``)."""
        return self.hyperspace.blocks[self.blocks[i - 1]]

    def stage_widths(self, i: int) -> tuple[int, ...]:
        return self.hyperspace.stages[i - 1].window(self.windows[i - 1])

    def stage_choices(self) -> list[StageChoices]:
        """Per stage, first_conv..stage6: block, allowed widths, kernels, expands, depths and stride."""
        hs = self.hyperspace
        out = [StageChoices(f.name, f.block, f.widths, f.block.kernels, f.block.expands or (0.0,), f.depths, f.stride)
               for f in (hs.first_conv, hs.stage0)]
        for i, st in enumerate(hs.stages, start=1):
            b = self.stage_block(i)
            out.append(StageChoices(st.name, b, self.stage_widths(i), b.kernels, b.expands or (0.0,), st.depths,
                                    st.stride))
        return out

    def num_subnets(self) -> int:
        """Size of this search space (distinct subnet strings), for reports."""
        hs = self.hyperspace
        total = len(hs.resolutions)
        total *= len(hs.first_conv.widths)
        total *= sum(len(hs.stage0.widths) ** d for d in hs.stage0.depths)
        for i, st in enumerate(hs.stages, start=1):
            b = self.stage_block(i)
            per_layer = len(b.kernels) * max(1, len(b.expands)) * st.ck
            total *= sum(per_layer ** d for d in st.depths)
        return total


@dataclass(frozen=True)
class Subnet:
    """A subnet encoding, not yet checked against a search space (see :meth:`SearchSpace`-aware
    validation in :func:`spaces.network.resolve`)."""

    depths: tuple[int, ...]
    kernels: tuple[int, ...]
    widths: tuple[int, ...]
    expands: tuple[float, ...]
    resolution: int

    @classmethod
    def parse(cls, text: str) -> "Subnet":
        if not isinstance(text, str):
            raise SpaceError("arch", text, "a subnet string 'd..._k..._w..._e..._r...'")
        parts = text.strip().split("_")
        prefixes = ("d", "k", "w", "e", "r")
        if len(parts) != 5 or any(not p.startswith(x) for p, x in zip(parts, prefixes)):
            raise SpaceError("arch", text, "'d<depths>_k<kernels>_w<widths>_e<expands>_r<resolution>' "
                             "with '#' between values")

        def nums(part: str, field: str, conv):
            try:
                return tuple(conv(v) for v in part[1:].split("#"))
            except ValueError:
                raise SpaceError(f"arch {field}", part[1:], "'#'-separated numbers") from None

        depths = nums(parts[0], "depths", int)
        kernels = nums(parts[1], "kernels", int)
        widths = nums(parts[2], "widths", int)
        expands = nums(parts[3], "expands", float)
        try:
            resolution = int(parts[4][1:])
        except ValueError:
            raise SpaceError("arch resolution", parts[4][1:], "an integer such as 224") from None
        if len(depths) != _NUM_STAGES:
            raise SpaceError("arch depths", "#".join(map(str, depths)),
                             f"{_NUM_STAGES} values ({', '.join(STAGE_NAMES)})")
        n = sum(depths)
        for field, vals in (("kernels", kernels), ("widths", widths), ("expands", expands)):
            if len(vals) != n:
                raise SpaceError(f"arch {field}", f"{len(vals)} values", f"{n} values (the sum of the depths)")
        return cls(depths, kernels, widths, expands, resolution)

    def to_string(self) -> str:
        j = lambda xs: "#".join(str(x) for x in xs)  # noqa: E731
        return (f"d{j(self.depths)}_k{j(self.kernels)}_w{j(self.widths)}"
                f"_e{'#'.join(format_expand(e) for e in self.expands)}_r{self.resolution}")

    __str__ = to_string

    def stage_layers(self) -> list[list[tuple[int, int, float]]]:
        """Per-stage lists of (kernel, width, expand) triples."""
        out, i = [], 0
        for d in self.depths:
            out.append([(self.kernels[j], self.widths[j], self.expands[j]) for j in range(i, i + d)])
            i += d
        return out

    @classmethod
    def from_stage_layers(cls, stage_layers, resolution: int) -> "Subnet":
        flat = [t for st in stage_layers for t in st]
        return cls(tuple(len(st) for st in stage_layers), tuple(int(k) for k, _, _ in flat),
                   tuple(int(w) for _, w, _ in flat), tuple(float(e or 0) for _, _, e in flat), int(resolution))
