"""``encoder_weights`` of the ResNet-34 U-Net: a user's local ResNet-34 state dict (torchvision naming)
loads; every kind of wrong file gives one ConfigError naming the file (no chained traceback)."""
from __future__ import annotations

import pickle

import pytest
import torch

from lmkcore.errors import ConfigError
from lmkcore.models.resnet_unet import ResNet34Encoder, ResNet34UNet, load_encoder_weights

#: a few parameter names of torchvision's ``resnet34().state_dict()`` (stem, a block, a projection
#: shortcut, BN buffers, the classifier).
TORCHVISION_NAMES = ["conv1.weight", "bn1.running_var", "bn1.num_batches_tracked", "layer1.2.conv2.weight",
                     "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean", "layer3.5.bn2.bias",
                     "layer4.2.conv2.weight"]


def _torchvision_like_state(base: int = 16) -> dict:
    src = ResNet34Encoder(3, base)
    return {**src.state_dict(), "fc.weight": torch.zeros(1000, 8 * base), "fc.bias": torch.zeros(1000)}


def test_encoder_uses_torchvision_parameter_names():
    names = set(ResNet34Encoder(3, 64).state_dict())
    assert set(TORCHVISION_NAMES) <= names
    assert not any(n.startswith("fc.") for n in names)


def test_checkpoint_wrapped_state_dict_loads(tmp_path):
    state = _torchvision_like_state()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "ckpt.pth")
    net = ResNet34UNet(1, 2, base_channels=16, encoder_weights=tmp_path / "ckpt.pth")
    torch.testing.assert_close(net.encoder.layer2[0].downsample[1].running_mean, state["layer2.0.downsample.1.running_mean"])


def _write(tmp_path, name, obj=None, raw: bytes | None = None):
    path = tmp_path / name
    if raw is not None:
        path.write_bytes(raw)
    else:
        torch.save(obj, path)
    return path


@pytest.mark.parametrize("case, pattern", [
    ("garbage", "not a readable PyTorch weights file"),
    ("plain_pickle", "not a readable PyTorch weights file"),
    ("tensor", "holds a Tensor, not a state dict"),
    ("list", "holds a list, not a state dict"),
    ("non_tensor_values", r"2 entries are not name -> tensor"),
    ("missing", r"missing \(2\): layer4.2.conv1.weight, layer4.2.conv2.weight"),
    ("wrong_shapes", "shape mismatch"),
    ("directory", "no file"),
])
def test_wrong_encoder_weights_file_gives_one_clear_error(tmp_path, case, pattern):
    state = _torchvision_like_state()
    if case == "garbage":
        path = _write(tmp_path, "w.pt", raw=b"\x00\x01 this is not a weights file")
    elif case == "plain_pickle":  # an arbitrary object: refused by weights_only=True
        path = _write(tmp_path, "w.pt", raw=pickle.dumps(object()))
    elif case == "tensor":
        path = _write(tmp_path, "w.pt", torch.zeros(3))
    elif case == "list":
        path = _write(tmp_path, "w.pt", [torch.zeros(3)])
    elif case == "non_tensor_values":
        path = _write(tmp_path, "w.pt", {**state, "epoch": 7, "lr": 0.1})
    elif case == "missing":
        path = _write(tmp_path, "w.pt", {k: v for k, v in state.items() if not k.startswith("layer4.2.conv")})
    elif case == "wrong_shapes":
        path = _write(tmp_path, "w.pt", _torchvision_like_state(base=8))
    else:
        path = tmp_path
    with pytest.raises(ConfigError, match=pattern) as info:
        ResNet34UNet(1, 2, base_channels=16, encoder_weights=path)
    assert str(path) in str(info.value)
    assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__)


def test_wrong_file_leaves_encoder_untouched(tmp_path):
    enc = ResNet34Encoder(1, 16)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    path = _write(tmp_path, "w.pt", _torchvision_like_state(base=8))
    with pytest.raises(ConfigError):
        load_encoder_weights(enc, path)
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
