"""The model zoo's registry and builders: names, metadata, forward shapes, refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.errors import ModelError
from harness.models import get_model, list_models, model_info, register_model
from harness.models.layers import Residual

ZOO = ["analognet-kws", "har-fc", "imec-kws-1d", "micronet-kws-s"]


def test_zoo_lists_the_seed_models() -> None:
    names = list_models()
    assert set(ZOO) <= set(names)
    assert names == sorted(names)


@pytest.mark.parametrize("name", ZOO)
def test_builder_output_shape_and_metadata(name: str) -> None:
    info = model_info(name)
    assert info.source and info.summary and info.task
    torch.manual_seed(0)
    net = get_model(name).eval()
    with torch.no_grad():
        out = net(torch.randn(3, *info.input_shape))
    assert out.shape == (3, info.n_classes)
    assert torch.isfinite(out).all()


def test_builders_take_n_classes() -> None:
    net = get_model("analognet-kws", n_classes=5).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 49, 10)).shape == (1, 5)


def test_imec_takes_the_harness_front_end_shape() -> None:
    net = get_model("imec-kws-1d", n_mfcc=10).eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 1, 49, 10)).shape == (2, 12)


def test_registry_refusals() -> None:
    with pytest.raises(ModelError, match="unknown zoo model 'resnet-50'; known: analognet-kws"):
        model_info("resnet-50")
    with pytest.raises(ModelError, match="zoo model 'har-fc'"):
        get_model("har-fc", no_such_option=1)
    with pytest.raises(ModelError, match="lower-case"):
        register_model("Bad Name", input_shape=(1,), n_classes=2, task="x", source="x", summary="x")
    with pytest.raises(ModelError, match="input_shape"):
        register_model("ok-name", input_shape=(0,), n_classes=2, task="x", source="x", summary="x")
    with pytest.raises(ModelError, match="registered twice"):
        register_model("har-fc", input_shape=(4,), n_classes=2, task="x", source="x", summary="x")(
            lambda: nn.Linear(4, 2)
        )


def test_residual_adds_its_input() -> None:
    block = Residual(nn.Sequential(nn.Linear(4, 4, bias=False)))
    with torch.no_grad():
        block.body[0].weight.zero_()
        x = torch.randn(2, 4)
        assert torch.equal(block(x), x)
