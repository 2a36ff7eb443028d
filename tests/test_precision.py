"""bf16 autocast + channels-last vs float32: one forward pass of each network family (small sizes, CPU)
stays within the stated relative tolerance (lmkcore.training.precision.BF16_TOLERANCE = 3 % relative L2)."""
from __future__ import annotations

import pytest
import torch

from lmkcore.models import build_model
from lmkcore.models.phdnet import PHDNet
from lmkcore.training.precision import BF16_TOLERANCE, autocast, channels_last, forward_precision_error


@pytest.mark.parametrize("name", ["scn", "resnet34_unet", "phdnet"])
def test_bf16_channels_last_forward_within_tolerance(name):
    torch.manual_seed(0)
    if name == "scn":
        model, x = build_model("scn", 1, 5, num_filters=16), torch.rand(1, 1, 64, 48)
    elif name == "resnet34_unet":
        model, x = build_model("resnet34_unet", 1, 5, base_channels=8), torch.rand(2, 1, 64, 48)
    else:
        model, x = PHDNet(1), torch.rand(4, 1, 32, 32)
    model.train()
    err = forward_precision_error(model, x)
    assert err.within_tolerance and err.rel_l2 <= BF16_TOLERANCE
    assert err.rel_l2 > 1e-5  # bf16 really was used: a float32 rerun would agree to ~1e-7
    assert model.training  # mode restored
    assert all(p.is_contiguous() for p in model.parameters())  # layout restored


def test_channels_last_alone_does_not_change_float32_outputs():
    torch.manual_seed(1)
    model = build_model("resnet34_unet", 1, 3, base_channels=8).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        ref = model(x)
        out = channels_last(model)(channels_last(x))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_autocast_disabled_is_float32():
    model = torch.nn.Conv2d(1, 2, 3)
    with autocast("cpu", enabled=False):
        assert model(torch.rand(1, 1, 8, 8)).dtype == torch.float32
    with autocast("cpu"):
        assert model(torch.rand(1, 1, 8, 8)).dtype == torch.bfloat16
