"""Workload extraction: a torch module → the list of matrix-vector workloads it puts on the array.

Run once per model (torch is used here and nowhere in the cost model). One forward pass of a
zero sample of ``input_shape`` with forward hooks on every ``Conv1d``, ``Conv2d`` and
``Linear`` (subclasses included, so hardware-aware layers count) records, in execution order,
each layer's input and output shapes. From them:

- ``rows``: fan-in of the dense weight matrix on the array = ``in_channels · prod(kernel)``.
  A grouped / depthwise conv is placed in its *dense expanded* form (AnalogNets §4.1, Fig. 3
  left): block-diagonal, ``rows = in_channels · k``, ``cols = out_channels``, of which only
  ``cols · (in_channels / groups) · k`` cells hold weights (``nonzero``).
- ``cols``: output channels / features.
- ``pixels``: matrix-vector products per inference = output elements / output channels (the
  output map size; for a ``Linear`` on ``(1, T, F)`` it is ``T``).
- ``macs = pixels · nonzero`` (useful multiply-accumulates; ops are counted as 2 per MAC).
- ``new_inputs_per_mvm``: activations IM2COL must fetch from SRAM per MVM when its window buffer
  keeps the overlap of consecutive windows (``in_channels · k_h · stride_w`` for 2-D convs,
  ``in_channels · stride`` for 1-D, all ``rows`` for a linear layer).

Other modules with weights (BatchNorm, LayerNorm, GroupNorm) are digital and skipped; any other
weighted module type (ConvTranspose, Conv3d, RNNs, ...) raises :class:`AccelError`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.errors import AccelError

if TYPE_CHECKING:
    from torch import nn

ANALOG_KINDS = ("conv1d", "conv2d", "linear")


@dataclass(frozen=True)
class LayerWork:
    """One analog layer's workload (see the module docstring for each field's meaning)."""

    name: str
    kind: str
    rows: int
    cols: int
    pixels: int
    groups: int = 1
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    in_channels: int = 0
    in_elems: int = 0
    out_elems: int = 0
    new_inputs_per_mvm: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ANALOG_KINDS:
            raise AccelError(f"layer {self.name}: kind {self.kind!r} not one of {ANALOG_KINDS}")
        for key in ("rows", "cols", "pixels", "groups"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise AccelError(f"layer {self.name}: {key}={v!r} must be a positive integer")
        if self.rows % self.groups or self.cols % self.groups:
            raise AccelError(f"layer {self.name}: rows and cols must be multiples of groups={self.groups}")

    @property
    def nonzero(self) -> int:
        """Cells holding weights: the block-diagonal blocks of a grouped layer, else rows · cols."""
        return self.rows * self.cols // self.groups

    @property
    def macs(self) -> int:
        return self.pixels * self.nonzero

    @property
    def depthwise(self) -> bool:
        return self.groups > 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "rows": self.rows,
            "cols": self.cols,
            "pixels": self.pixels,
            "groups": self.groups,
            "kernel": list(self.kernel),
            "stride": list(self.stride),
            "in_channels": self.in_channels,
            "in_elems": self.in_elems,
            "out_elems": self.out_elems,
            "new_inputs_per_mvm": self.new_inputs_per_mvm,
            "macs": self.macs,
        }


@dataclass(frozen=True)
class Workload:
    """A model's analog layers in execution order, plus the input shape they were traced with."""

    name: str
    input_shape: tuple[int, ...]
    layers: tuple[LayerWork, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.layers:
            raise AccelError(f"model {self.name} has no Conv1d/Conv2d/Linear layer to place on the array")

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def mvms(self) -> int:
        return sum(layer.pixels for layer in self.layers)


_DIGITAL_WEIGHTED = ("BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d")


def extract_workload(module: nn.Module, input_shape: Sequence[int], name: str | None = None) -> Workload:
    """Trace ``module`` on one zero sample of ``input_shape`` (no batch dimension).

    Raises :class:`AccelError` for an unsupported weighted layer type, a module that fails on
    the given input shape, or a model without analog layers.
    """
    import torch
    from torch import nn

    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise AccelError(f"input shape {shape} must be non-empty positive sizes (no batch dimension)")
    model_name = name or type(module).__name__
    analog = (nn.Conv1d, nn.Conv2d, nn.Linear)
    for mod_name, mod in module.named_modules():
        if isinstance(mod, analog):
            continue
        weighted_leaf = getattr(mod, "weight", None) is not None and not list(mod.children())
        if weighted_leaf and type(mod).__name__ not in _DIGITAL_WEIGHTED:
            raise AccelError(
                f"model {model_name}: layer {mod_name or '<root>'} of type {type(mod).__name__} is not "
                "supported by the accelerator model (Conv1d, Conv2d, Linear; norms are digital)"
            )
    records: list[LayerWork] = []
    seen: dict[str, int] = {}
    names = {id(m): n for n, m in module.named_modules()}

    def hook(mod: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        base = names.get(id(mod), type(mod).__name__) or type(mod).__name__
        seen[base] = seen.get(base, 0) + 1
        layer_name = base if seen[base] == 1 else f"{base}#{seen[base]}"
        records.append(_layer_from(layer_name, mod, tuple(inputs[0].shape), tuple(output.shape)))

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, analog)]
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad(), warnings.catch_warnings():
            # torch warns that 'same' padding with even kernels copies the input: irrelevant here.
            warnings.filterwarnings("ignore", message="Using padding='same'")
            module(torch.zeros((1, *shape)))
    except AccelError:
        raise
    except Exception as exc:  # any failure of user code on this shape is a user error here
        raise AccelError(f"model {model_name} fails on input shape {shape}: {type(exc).__name__}: {exc}") from exc
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    return Workload(name=model_name, input_shape=shape, layers=tuple(records))


def _layer_from(name: str, mod: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> LayerWork:
    from torch import nn

    in_elems = math.prod(in_shape[1:])
    out_elems = math.prod(out_shape[1:])
    if isinstance(mod, nn.Linear):
        rows, cols = int(mod.in_features), int(mod.out_features)
        return LayerWork(
            name=name, kind="linear", rows=rows, cols=cols, pixels=out_elems // cols,
            in_channels=rows, in_elems=in_elems, out_elems=out_elems, new_inputs_per_mvm=rows,
        )
    assert isinstance(mod, nn.Conv1d | nn.Conv2d)  # guaranteed by the caller's isinstance filter
    kernel = tuple(int(k) for k in mod.kernel_size)
    stride = tuple(int(s) for s in mod.stride)
    cin, cout, groups = int(mod.in_channels), int(mod.out_channels), int(mod.groups)
    rows = cin * math.prod(kernel)
    if isinstance(mod, nn.Conv1d):
        kind = "conv1d"
        new = cin * min(stride[0], kernel[0])
    else:
        kind = "conv2d"
        new = cin * kernel[0] * min(stride[1], kernel[1])
    return LayerWork(
        name=name, kind=kind, rows=rows, cols=cout, pixels=out_elems // cout, groups=groups,
        kernel=kernel, stride=stride, in_channels=cin, in_elems=in_elems, out_elems=out_elems,
        new_inputs_per_mvm=min(new, rows),
    )
