"""The explicit, resolved form of a subnet: every layer with its input/output widths and sizes.

A subnet string is meaningful only together with its search space (which says the block type of
each stage). :func:`resolve` validates the pair and produces a :class:`Network`, the one structure
that the torch and Keras builders, the FLOPs counter and the kernel list all read, so the four can
never disagree about what a subnet is. :meth:`Network.to_json` / :func:`network_from_json` give the
explicit JSON layer form accepted by the service.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .encoding import SearchSpace, Subnet
from .errors import SpaceError
from .hyperspace import (HEAD_FEATURE_MIX, HEAD_FINAL_EXPAND, NUM_CLASSES, STAGE_NAMES, BlockType,
                         HyperSpace, get_hyperspace, make_divisible)

JSON_FORMAT = "spaceevo-layers/1"


def conv_out(hw: int, kernel: int, stride: int) -> int:
    """Output size of a conv with 'same'-style padding k//2 (torch semantics)."""
    return (hw + 2 * (kernel // 2) - kernel) // stride + 1


@dataclass(frozen=True)
class Layer:
    """One block (or head layer) of a network, with everything a builder needs.

    ``kind``: conv | mbv1 | mb | res | fused (body blocks), conv (final_expand), pool_conv
    (feature_mix: global average pool then 1x1 conv) or linear (logits).
    ``hidden`` is the expanded width (0 where there is none), ``se_mid`` the SE bottleneck width
    (0 without SE), ``shortcut`` one of none / identity / conv.
    """

    stage: str
    index: int
    block: str
    kind: str
    kernel: int
    cin: int
    cout: int
    expand: float
    stride: int
    activation: str
    in_hw: int
    out_hw: int
    hidden: int = 0
    se_mid: int = 0
    shortcut: str = "none"
    k3_stack: bool = False
    act_after_add: bool = False

    @property
    def name(self) -> str:
        return f"{self.stage}_{self.index}"


def _block_layer(stage: str, index: int, bt: BlockType, k: int, cin: int, cout: int, e: float,
                 stride: int, hw: int) -> Layer:
    out_hw = conv_out(hw, k, stride)
    identity_ok = stride == 1 and cin == cout
    hidden = se_mid = 0
    act_after_add = False
    if bt.kind == "conv":
        return Layer(stage, index, bt.name, "conv", k, cin, cout, 0.0, stride, bt.activation, hw, out_hw)
    if bt.kind == "mbv1":
        shortcut = "identity" if identity_ok else "conv"
    elif bt.kind == "mb":
        hidden = make_divisible(cin * e)
        se_mid = make_divisible(hidden // 4) if bt.se else 0
        shortcut = "identity" if identity_ok else ("conv" if bt.force_shortcut else "none")
    elif bt.kind == "res":
        hidden = make_divisible(cout * e)
        se_mid = make_divisible(cin // 4) if bt.se else 0
        shortcut = "identity" if identity_ok else "conv"
        act_after_add = True
    elif bt.kind == "fused":
        hidden = make_divisible(cin * e)
        se_mid = make_divisible(cin // 4) if bt.se else 0
        shortcut = "identity" if identity_ok else "conv"
    else:  # pragma: no cover - hyperspace tables only use the kinds above
        raise AssertionError(bt.kind)
    return Layer(stage, index, bt.name, bt.kind, k, cin, cout, float(e or 0), stride, bt.activation, hw,
                 out_hw, hidden, se_mid, shortcut, bt.k3_stack, act_after_add)


@dataclass(frozen=True)
class Network:
    """A resolved subnet. ``space`` is known when it came from a space + subnet string."""

    hyperspace: HyperSpace
    resolution: int
    layers: tuple[Layer, ...]
    space: SearchSpace | None = None

    # --- views -----------------------------------------------------------------------------------
    @property
    def body(self) -> tuple[Layer, ...]:
        return tuple(l for l in self.layers if l.stage in STAGE_NAMES)

    def subnet(self) -> Subnet:
        stages = [[(l.kernel, l.cout, l.expand) for l in self.body if l.stage == s] for s in STAGE_NAMES]
        return Subnet.from_stage_layers(stages, self.resolution)

    def to_subnet_string(self) -> str:
        return self.subnet().to_string()

    def stage_blocks(self) -> dict[str, str]:
        return {l.stage: l.block for l in self.body}

    def flops(self) -> int:
        from .flops import network_macs

        return network_macs(self)

    def params(self) -> int:
        from .flops import network_params

        return network_params(self)

    def kernels(self):
        from .kernels import network_kernels

        return network_kernels(self)

    # --- JSON ------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": JSON_FORMAT,
            "hyperspace": self.hyperspace.name,
            "space": self.space.to_string() if self.space else None,
            "resolution": self.resolution,
            "layers": [
                {"stage": l.stage, "block": l.block, "kernel": l.kernel, "width": l.cout, "expand": l.expand,
                 "stride": l.stride, "cin": l.cin, "in_hw": l.in_hw, "out_hw": l.out_hw, "hidden": l.hidden,
                 "se_mid": l.se_mid, "shortcut": l.shortcut, "activation": l.activation}
                for l in self.layers
            ],
        }


def _head_layers(hs: HyperSpace, cin: int, hw: int) -> list[Layer]:
    act = hs.head_activation
    return [
        Layer("final_expand", 0, "conv", "conv", 1, cin, HEAD_FINAL_EXPAND, 0.0, 1, act, hw, hw),
        Layer("feature_mix", 0, "pool_conv", "pool_conv", 1, HEAD_FINAL_EXPAND, HEAD_FEATURE_MIX, 0.0, 1, act,
              hw, 1),
        Layer("logits", 0, "linear", "linear", 1, HEAD_FEATURE_MIX, NUM_CLASSES, 0.0, 1, "none", 1, 1),
    ]


def build_network(hs: HyperSpace, resolution: int, stage_blocks: list[BlockType],
                  stage_layers: list[list[tuple[int, int, float]]], space: SearchSpace | None = None) -> Network:
    """Build the resolved layer list. Inputs must already be validated."""
    layers: list[Layer] = []
    cin, hw = 3, resolution
    strides = [hs.first_conv.stride, hs.stage0.stride] + [s.stride for s in hs.stages]
    for stage, bt, stride, choices in zip(STAGE_NAMES, stage_blocks, strides, stage_layers):
        for i, (k, w, e) in enumerate(choices):
            layer = _block_layer(stage, i, bt, k, cin, w, e, stride if i == 0 else 1, hw)
            layers.append(layer)
            cin, hw = layer.cout, layer.out_hw
    layers.extend(_head_layers(hs, cin, hw))
    return Network(hs, resolution, tuple(layers), space)


def _check_layer(field: str, bt: BlockType, k: int, w: int, e: float, widths: Iterable[int],
                 width_hint: str) -> None:
    if k not in bt.kernels:
        raise SpaceError(f"{field} kernel", k, bt.kernels, hint=f"kernel sizes of block {bt.name}")
    widths = tuple(widths)
    if w not in widths:
        raise SpaceError(f"{field} width", w, widths, hint=width_hint)
    allowed_e = bt.expands if bt.expands else (0.0,)
    if float(e or 0) not in allowed_e:
        raise SpaceError(f"{field} expand", e, allowed_e,
                         hint=f"expand ratios of block {bt.name}" + ("" if bt.expands else " (none: use 0)"))


def _check_resolution(hs: HyperSpace, r: int) -> None:
    if r not in hs.resolutions:
        raise SpaceError("resolution", r, hs.resolutions)


def resolve(space: SearchSpace | str, arch: Subnet | str) -> Network:
    """Validate ``arch`` against ``space`` and build its :class:`Network`.

    Raises :class:`SpaceError` naming the first bad field (depth, kernel, width, expand, resolution)
    and the values the space allows there.
    """
    if isinstance(space, str):
        space = SearchSpace.parse(space)
    if isinstance(arch, str):
        arch = Subnet.parse(arch)
    hs = space.hyperspace
    _check_resolution(hs, arch.resolution)
    choices = space.stage_choices()
    for c, d in zip(choices, arch.depths):
        if d not in c.depths:
            raise SpaceError(f"{c.name} depth", d, c.depths)
    stage_layers = arch.stage_layers()
    for si, (c, layers) in enumerate(zip(choices, stage_layers)):
        hint = (f"window {space.windows[si - 2]} of {c.name}" if si >= 2 else f"{c.name} widths")
        for li, (k, w, e) in enumerate(layers):
            _check_layer(f"{c.name} layer {li}", c.block, k, w, e, c.widths, hint)
    stage_blocks = [c.block for c in choices]
    return build_network(hs, arch.resolution, stage_blocks, stage_layers, space)


# --- explicit JSON layer form ----------------------------------------------------------------------
class LayerJSON(BaseModel):
    """One layer of the JSON form. Derived fields (cin, in_hw, ...) are optional on input and, when
    given, must agree with what the choices imply."""

    model_config = ConfigDict(extra="forbid")
    stage: Literal["first_conv", "stage0", "stage1", "stage2", "stage3", "stage4", "stage5", "stage6",
                   "final_expand", "feature_mix", "logits"]
    block: str
    kernel: int
    width: int
    expand: float = 0.0
    stride: int | None = None
    cin: int | None = None
    in_hw: int | None = None
    out_hw: int | None = None
    hidden: int | None = None
    se_mid: int | None = None
    shortcut: str | None = None
    activation: str | None = None


class NetworkJSON(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["spaceevo-layers/1"] = JSON_FORMAT
    hyperspace: str
    space: str | None = None
    resolution: int
    layers: list[LayerJSON] = Field(min_length=1)


_DERIVED = ("stride", "cin", "in_hw", "out_hw", "hidden", "se_mid", "shortcut", "activation")


def network_from_json(data: dict[str, Any] | str) -> Network:
    """Parse and validate the explicit JSON layer form (dict or JSON text)."""
    try:
        doc = NetworkJSON.model_validate_json(data) if isinstance(data, str) else NetworkJSON.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise SpaceError(f"layers JSON {loc}", err.get("input"), hint=err["msg"]) from None
    hs = get_hyperspace(doc.hyperspace)
    space = SearchSpace.parse(doc.space) if doc.space else None
    if space is not None and space.hyperspace is not hs:
        raise SpaceError("layers JSON space", doc.space, f"a space of hyperspace {hs.name}")
    _check_resolution(hs, doc.resolution)
    body = [l for l in doc.layers if l.stage in STAGE_NAMES]
    head = [l for l in doc.layers if l.stage not in STAGE_NAMES]
    stage_blocks: list[BlockType] = []
    stage_layers: list[list[tuple[int, int, float]]] = []
    fixed = {"first_conv": hs.first_conv, "stage0": hs.stage0}
    order = [l.stage for l in body]
    if order != sorted(order, key=STAGE_NAMES.index):
        raise SpaceError("layers JSON stage order", order, STAGE_NAMES)
    for si, name in enumerate(STAGE_NAMES):
        ls = [l for l in body if l.stage == name]
        if name in fixed:
            spec = fixed[name]
            bt, widths, depths, hint = spec.block, spec.widths, spec.depths, f"{name} widths"
        else:
            st = hs.stages[si - 2]
            names = {l.block for l in ls}
            if len(names) > 1:
                raise SpaceError(f"{name} block", sorted(names), "one block type per stage")
            if space is not None:
                bt, widths = space.stage_block(si - 1), space.stage_widths(si - 1)
                hint = f"window {space.windows[si - 2]} of {name}"
            else:
                bt = hs.block_by_name(names.pop()) if names else hs.blocks[0]
                widths, hint = st.widths, f"{name} widths of {hs.name}"
            depths = st.depths
        if len(ls) not in depths:
            raise SpaceError(f"{name} depth", len(ls), depths)
        for li, l in enumerate(ls):
            if l.block != bt.name:
                raise SpaceError(f"{name} layer {li} block", l.block, [bt.name])
            _check_layer(f"{name} layer {li}", bt, l.kernel, l.width, l.expand, widths, hint)
        stage_blocks.append(bt)
        stage_layers.append([(l.kernel, l.width, l.expand) for l in ls])
    net = build_network(hs, doc.resolution, stage_blocks, stage_layers, space)
    given = body + head
    if head and len(head) != 3:
        raise SpaceError("layers JSON head", [l.stage for l in head], ["final_expand", "feature_mix", "logits"])
    for l_in, l in zip(given, [x for x in net.layers if x.stage in {g.stage for g in given}]):
        for f in _DERIVED:
            v = getattr(l_in, f)
            if v is not None and v != getattr(l, f):
                raise SpaceError(f"{l.stage} layer {l.index} {f}", v, [getattr(l, f)],
                                 hint="derived fields must agree with the choices")
        if l_in.stage not in STAGE_NAMES and (l_in.width != l.cout or l_in.kernel != l.kernel):
            raise SpaceError(f"{l.stage} width", l_in.width, [l.cout], hint="the head is fixed")
    return net


def layer_dicts(net: Network) -> list[dict[str, Any]]:
    return [asdict(l) for l in net.layers]
