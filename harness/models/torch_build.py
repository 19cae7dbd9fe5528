"""A checked architecture plan as a torch network: the ``torch.nn.Sequential`` that
:meth:`harness.models.model.Model.to_torch` fills with the model's weights."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from harness.models.spec import PlanStep, conv_geometry, int_pair


def build_torch(plan: tuple[PlanStep, ...]) -> nn.Sequential:
    """The network of ``plan``, uninitialised: children named after the layers' last path part,
    residual blocks as :class:`harness.models.layers.Residual`, batch norm with fresh statistics.
    The caller loads the weights (its ``state_dict()`` keys are the model's weight keys)."""
    from harness.models.layers import Residual

    modules: OrderedDict[str, nn.Module] = OrderedDict()
    for step in plan:
        spec = step.spec
        kind = spec["type"]
        module: nn.Module
        # no random init (the weights are loaded afterwards), so building the network leaves
        # the caller's global torch RNG untouched.
        if kind == "linear":
            module = _uninitialised(nn.Linear, spec["in_features"], spec["out_features"], bias=spec["bias"])
        elif kind in ("conv1d", "conv2d"):
            from harness.models.layers import SameConv1d, SameConv2d

            cls = SameConv1d if kind == "conv1d" else SameConv2d  # plain Conv1d/2d but for 'same'
            g = conv_geometry(spec)
            padding: Any = "same" if spec["padding"] == "same" else tuple(p for p, _ in g.padding)
            module = _uninitialised(
                cls, spec["in_channels"], spec["out_channels"], kernel_size=g.kernel, stride=g.stride,
                padding=padding, dilation=g.dilation, groups=g.groups, bias=spec["bias"],
            )
        elif kind == "batchnorm":
            bn = nn.BatchNorm1d if len(step.in_shape) < 3 else nn.BatchNorm2d
            module = bn(spec["num_features"], eps=float(spec["eps"]))
        elif kind == "relu":
            module = nn.ReLU()
        elif kind == "relu6":
            module = nn.ReLU6()
        elif kind == "flatten":
            module = nn.Flatten(start_dim=spec.get("start_dim", 1))
        elif kind == "unflatten":
            module = nn.Unflatten(spec["dim"], tuple(spec["sizes"]))
        elif kind == "avgpool1d":
            module = nn.AvgPool1d(spec["kernel_size"], spec["stride"], spec["padding"])
        elif kind == "avgpool2d":
            module = nn.AvgPool2d(int_pair(spec["kernel_size"]), int_pair(spec["stride"]), int_pair(spec["padding"]))
        elif kind == "global_avgpool":
            module = nn.AdaptiveAvgPool1d(1) if len(step.in_shape) == 2 else nn.AdaptiveAvgPool2d(1)
        elif kind == "residual":
            module = Residual(build_torch(step.body))
        else:
            module = build_torch(step.body)
        modules[step.path.rsplit(".", 1)[-1]] = module
    return nn.Sequential(modules)


def _uninitialised(cls: type[nn.Module], *args: Any, **kwargs: Any) -> nn.Module:
    """``cls(*args, **kwargs)`` with uninitialised CPU parameters and no random draw: built on
    the meta device, then each parameter replaced by an empty tensor of its shape.
    (``torch.nn.utils.skip_init`` does the same through ``to_empty``, whose ``empty_like``
    pulls in torch's symbolic-shape machinery and sympy: 0.4 s of every evaluation's start.)"""
    module = cls(*args, device="meta", **kwargs)
    for name, p in list(module.named_parameters(recurse=False)):
        setattr(module, name, nn.Parameter(torch.empty(p.shape, dtype=p.dtype), requires_grad=p.requires_grad))
    return module
