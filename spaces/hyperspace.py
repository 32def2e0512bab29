"""The two SpaceEvo hyperspaces (``onnxw`` for onnxruntime on x86, ``mobilew`` for TFLite on ARM).

Numbers follow the SpaceEvo reference implementation (microsoft/Moonlit, ``OnnxSuperSpaceW`` and
``MobileSuperSpaceW``) so that published search-space strings, subnet strings and lookup tables work
unchanged. See DESIGN.md ("Vocabulary") for the table this module encodes.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import SpaceError

STAGE_NAMES = ("first_conv", "stage0", "stage1", "stage2", "stage3", "stage4", "stage5", "stage6")
HEAD_FINAL_EXPAND = 1280
HEAD_FEATURE_MIX = 1920
NUM_CLASSES = 1000
RESOLUTIONS = (160, 176, 192, 208, 224)


def make_divisible(v: float, divisor: int = 8, min_val: int | None = None) -> int:
    """Round ``v`` to a multiple of ``divisor`` without losing more than 10% (MobileNet convention)."""
    if min_val is None:
        min_val = divisor
    new_v = max(min_val, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


@dataclass(frozen=True)
class BlockType:
    """One searchable block type: its digit in the search-space string and its elastic choices.

    ``kind`` selects the graph (shared by builders, FLOPs and kernel lists):
    ``mbv1`` dual depthwise-separable, ``mb`` inverted residual (MBv2/MBv3), ``res`` residual
    bottleneck, ``fused`` FusedMB. ``se`` adds squeeze-excitation, ``k3_stack`` builds a k x k
    depthwise conv from (k-1)/2 stacked 3x3 ones, ``force_shortcut`` adds a 1x1 projection
    shortcut when identity is impossible.
    """

    digit: int
    name: str
    kind: str
    kernels: tuple[int, ...]
    expands: tuple[float, ...]  # empty for MBv1 (encoded as e=0)
    activation: str
    se: bool = False
    k3_stack: bool = False
    force_shortcut: bool = True

    @property
    def has_expand(self) -> bool:
        return bool(self.expands)


@dataclass(frozen=True)
class StageSpec:
    """An elastic stage: stride, depth choices, the full width list and the window size ``ck``."""

    name: str
    stride: int
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    ck: int

    @property
    def num_windows(self) -> int:
        return len(self.widths) - self.ck + 1

    def window(self, c: int) -> tuple[int, ...]:
        if not 0 <= c < self.num_windows:
            raise SpaceError(f"{self.name} width window", c, list(range(self.num_windows)),
                             hint=f"window c selects widths[c:c+{self.ck}] of {list(self.widths)}")
        return self.widths[c : c + self.ck]


@dataclass(frozen=True)
class FixedStage:
    """first_conv or stage0: not searched for block type, but elastic in depth and width."""

    name: str
    stride: int
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    block: BlockType


@dataclass(frozen=True)
class HyperSpace:
    name: str
    aliases: tuple[str, ...]
    width_divisor: int
    blocks: tuple[BlockType, ...]
    first_conv: FixedStage
    stage0: FixedStage
    stages: tuple[StageSpec, ...]
    head_activation: str
    resolutions: tuple[int, ...] = RESOLUTIONS

    def block(self, digit: int) -> BlockType:
        if not 0 <= digit < len(self.blocks):
            raise SpaceError(f"{self.name} block digit", digit,
                             [f"{b.digit}={b.name}" for b in self.blocks])
        return self.blocks[digit]

    def block_by_name(self, name: str) -> BlockType:
        for b in (*self.blocks, self.first_conv.block, self.stage0.block):
            if b.name == name:
                return b
        raise SpaceError(f"{self.name} block", name, [b.name for b in self.blocks])

    def describe(self) -> dict:
        """A JSON-ready description (used by ``python -m spaces describe`` and the service)."""
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "resolutions": list(self.resolutions),
            "blocks": [
                {"digit": b.digit, "name": b.name, "kernels": list(b.kernels), "expands": list(b.expands),
                 "activation": b.activation, "se": b.se}
                for b in self.blocks
            ],
            "fixed": [
                {"stage": s.name, "block": s.block.name, "depths": list(s.depths), "widths": list(s.widths),
                 "stride": s.stride}
                for s in (self.first_conv, self.stage0)
            ],
            "stages": [
                {"stage": s.name, "stride": s.stride, "depths": list(s.depths), "widths": list(s.widths),
                 "ck": s.ck, "windows": s.num_windows}
                for s in self.stages
            ],
            "head": {"final_expand": HEAD_FINAL_EXPAND, "feature_mix": HEAD_FEATURE_MIX,
                     "activation": self.head_activation, "classes": NUM_CLASSES},
        }


def _steps(lo: int, hi: int, step: int) -> tuple[int, ...]:
    return tuple(range(lo, hi + 1, step))


_FIRST_CONV = BlockType(-1, "conv", "conv", (3,), (), "relu")

ONNXW = HyperSpace(
    name="onnxw",
    aliases=("vnni",),
    width_divisor=16,
    blocks=(
        BlockType(0, "mbv1", "mbv1", (3, 5), (), "relu"),
        BlockType(1, "mbv2", "mb", (3, 5), (4.0, 6.0, 8.0), "relu6"),
        BlockType(2, "mbv3", "mb", (3, 5), (4.0, 6.0, 8.0), "hswish", se=True),
        BlockType(3, "res", "res", (3, 5, 7), (0.5, 1.0, 1.5), "relu"),
        BlockType(4, "res_se", "res", (3, 5, 7), (0.5, 1.0, 1.5), "relu", se=True),
        BlockType(5, "fused_mb", "fused", (3, 5, 7), (1.0, 2.0, 3.0, 4.0), "swish"),
    ),
    first_conv=FixedStage("first_conv", 2, (1,), _steps(16, 32, 16), _FIRST_CONV),
    stage0=FixedStage("stage0", 1, (1, 2), _steps(16, 32, 16),
                      BlockType(-1, "stage0_res", "res", (3,), (0.5,), "relu")),
    stages=(
        StageSpec("stage1", 2, (2, 3, 4), _steps(32, 64, 16), 2),
        StageSpec("stage2", 2, (2, 3, 4), _steps(32, 96, 16), 2),
        StageSpec("stage3", 2, (2, 3, 4, 5, 6), _steps(64, 144, 16), 3),
        StageSpec("stage4", 1, (2, 3, 4, 5, 6), _steps(112, 192, 16), 3),
        StageSpec("stage5", 2, (2, 3, 4, 5, 6), _steps(192, 304, 16), 5),
        StageSpec("stage6", 1, (1, 2), _steps(304, 448, 16), 7),
    ),
    head_activation="hswish",
)

MOBILEW = HyperSpace(
    name="mobilew",
    aliases=("pixel4",),
    width_divisor=8,
    blocks=(
        BlockType(0, "mbv1", "mbv1", (3, 5, 7), (), "relu"),
        BlockType(1, "mbv2", "mb", (3, 5, 7), (3.0, 6.0, 8.0), "relu6"),
        BlockType(2, "mbv3", "mb", (3, 5, 7), (3.0, 6.0, 8.0), "swish", se=True),
        BlockType(3, "res", "res", (3, 5), (0.5, 1.0, 1.5), "relu"),
        BlockType(4, "fused_mb_se", "fused", (3, 5, 7), (1.0, 2.0, 3.0, 4.0), "swish", se=True),
        BlockType(5, "mbv3_k3", "mb", (3, 5, 7), (3.0, 6.0, 8.0), "swish", se=True, k3_stack=True),
        BlockType(6, "mbv2_k3", "mb", (3, 5, 7), (3.0, 6.0, 8.0), "relu6", k3_stack=True),
    ),
    first_conv=FixedStage("first_conv", 2, (1,), _steps(16, 32, 8), _FIRST_CONV),
    # The reference uses a plain MobileNetV2 block here: identity shortcut only when possible,
    # never a 1x1 projection shortcut, and ReLU (not ReLU6).
    stage0=FixedStage("stage0", 1, (1, 2), _steps(16, 32, 8),
                      BlockType(-1, "stage0_mbv2", "mb", (3,), (1.0,), "relu", force_shortcut=False)),
    stages=(
        StageSpec("stage1", 2, (2, 3, 4), _steps(24, 40, 8), 2),
        StageSpec("stage2", 2, (2, 3, 4), _steps(24, 72, 8), 2),
        StageSpec("stage3", 2, (2, 3, 4, 5, 6), _steps(56, 112, 8), 3),
        StageSpec("stage4", 1, (2, 3, 4, 5, 6, 7, 8), _steps(112, 176, 8), 3),
        StageSpec("stage5", 2, (2, 3, 4, 5, 6, 7, 8), (192, 200, 208, 216, 224, 240, 256, 272, 288), 5),
        StageSpec("stage6", 1, (1, 2), _steps(216, 360, 16), 7),
    ),
    head_activation="swish",
)

HYPERSPACES: dict[str, HyperSpace] = {"onnxw": ONNXW, "mobilew": MOBILEW}
_ALIASES = {alias: hs for hs in HYPERSPACES.values() for alias in (hs.name, *hs.aliases)}


def get_hyperspace(name: str) -> HyperSpace:
    """Look up a hyperspace by name or alias (``vnni`` -> ``onnxw``, ``pixel4`` -> ``mobilew``)."""
    try:
        return _ALIASES[name]
    except KeyError:
        raise SpaceError("hyperspace", name, sorted(_ALIASES)) from None
