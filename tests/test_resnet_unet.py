"""ResNet-34 U-Net (McCouat & Voiculescu 2022): architecture sizes, grid alignment, local weights."""
from __future__ import annotations

import pytest
import torch

from lmkcore.errors import ConfigError
from lmkcore.models import ResNet34UNet, build_model, count_parameters
from lmkcore.models.resnet_unet import ResNet34Encoder, load_encoder_weights

#: torchvision-style ResNet-34 (3 input channels) has 21,797,672 parameters, of which the fc layer
#: (512 x 1000 + 1000) is 513,000; one grey input channel removes 2 x 64 x 7 x 7 = 6,272 stem weights.
RESNET34_FEATURE_PARAMS_GREY = 21_797_672 - 513_000 - 6_272


def test_encoder_is_resnet34():
    enc = ResNet34Encoder(1, 64)
    assert count_parameters(enc) == RESNET34_FEATURE_PARAMS_GREY
    assert [len(getattr(enc, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    feats = enc(torch.zeros(1, 1, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 32, 48), (64, 16, 24), (128, 8, 12), (256, 4, 6), (512, 2, 3)]


def test_paper_decoder_widths_and_small_width_scaling():
    assert ResNet34UNet(1, 5, base_channels=64).decoder_channels == [256, 128, 64, 32, 32]
    small = ResNet34UNet(1, 5, base_channels=16)
    assert small.decoder_channels == [64, 32, 16, 8, 8]
    assert small.encoder.channels == [16, 16, 32, 64, 128]


@pytest.mark.parametrize("h, w", [(64, 64), (70, 53), (33, 31)])
def test_output_grid_equals_input_grid(h, w):
    net = build_model("resnet34_unet", 1, 3, base_channels=4).eval()
    x = torch.randn(2, 1, h, w)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 3, h, w)
    # padding is at the far end only: the output of a crop equals the output of the padded crop
    with torch.no_grad():
        padded = net(torch.nn.functional.pad(x, (0, (-w) % 32, 0, (-h) % 32)))
    torch.testing.assert_close(y, padded[..., :h, :w])


def test_local_weights_load_and_mismatch_is_reported(tmp_path):
    src = ResNet34Encoder(3, 16)
    state = {**src.state_dict(), "fc.weight": torch.zeros(10, 128), "fc.bias": torch.zeros(10)}
    torch.save(state, tmp_path / "r34.pt")
    net = ResNet34UNet(1, 2, base_channels=16, encoder_weights=tmp_path / "r34.pt")
    torch.testing.assert_close(net.encoder.conv1.weight, src.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(net.encoder.layer3[5].conv2.weight, src.layer3[5].conv2.weight)
    with pytest.raises(ConfigError, match="shape mismatch"):
        ResNet34UNet(1, 2, base_channels=8, encoder_weights=tmp_path / "r34.pt")
    del state["layer4.2.bn2.weight"]
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(ConfigError, match=r"missing \(1\): layer4.2.bn2.weight"):
        load_encoder_weights(ResNet34Encoder(1, 16), tmp_path / "broken.pt")
    with pytest.raises(ConfigError, match="no file"):
        ResNet34UNet(1, 2, base_channels=16, encoder_weights=tmp_path / "absent.pt")


def test_a_few_steps_fit_one_image():
    torch.manual_seed(0)
    net = ResNet34UNet(1, 2, base_channels=8)
    x = torch.rand(1, 1, 64, 64)
    target = torch.tensor([5 * 64 + 7, 40 * 64 + 50])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        logp = torch.log_softmax(net(x).flatten(2), -1)[0]
        loss = -logp[torch.arange(2), target].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
