"""SpatialConfiguration-Net and Localization U-Net (Payer et al. 2019)."""
import math

import pytest
import torch
import torch.nn.functional as F

from lmkcore.training.targets import gaussian_heatmaps, heatmap_loss
from lmkcore.models import (
    LocalAppearance,
    LocalizationUNet,
    SpatialConfigurationNet,
    build_model,
    count_parameters,
    enable_mc_dropout,
    paper_optimizer,
    upsample_cubic,
)


def _conv_params(cin, cout, k, dims=2):
    return k**dims * cin * cout + cout


def _small_scn(n=3, dims=2, **kw):
    kw = {"num_filters": 8, "sc_filters": 8, **kw}
    return SpatialConfigurationNet(1, n, spatial_dims=dims, **kw)


@pytest.mark.parametrize("name", ["scn", "la_only", "unet"])
def test_output_shapes_2d(name):
    torch.manual_seed(0)
    extra = {"sc_filters": 8} if name != "unet" else {}
    model = build_model(name, 2, 5, num_filters=8, **extra)
    out = model(torch.randn(2, 2, 64, 48))
    assert out.shape == (2, 5, 64, 48)


@pytest.mark.parametrize("name", ["scn", "la_only", "unet"])
def test_output_shapes_3d(name):
    torch.manual_seed(0)
    extra = {"sc_filters": 4} if name != "unet" else {"num_levels": 4}
    model = build_model(name, 1, 3, spatial_dims=3, num_filters=4, **extra)
    out = model(torch.randn(1, 1, 16, 24, 16))
    assert out.shape == (1, 3, 16, 24, 16)


def test_sc_component_works_at_paper_resolution():
    seen = {}
    for dims, shape, factor, kernel in [(2, (64, 96), 16, 11), (3, (16, 24, 8), 4, 7)]:
        model = _small_scn(n=3, dims=dims)
        assert model.sc.sc_factor == factor
        convs = [m for m in model.sc.convs if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
        assert len(convs) == 4 and all(c.kernel_size == (kernel,) * dims for c in convs)
        assert convs[-1].out_channels == 3 and isinstance(model.sc.convs[-1], torch.nn.Tanh)
        handle = model.sc.convs.register_forward_hook(lambda m, i, o, d=dims: seen.__setitem__(d, (i[0].shape, o.shape)))
        out, la, sc = model(torch.randn(2, 1, *shape), return_components=True)
        handle.remove()
        low = tuple(s // factor for s in shape)
        assert seen[dims][0] == (2, 3) + low and seen[dims][1] == (2, 3) + low
        assert la.shape == sc.shape == out.shape == (2, 3) + shape
    # LA: 4 levels, 3 convs each, pooling 2 -> the deepest level runs at 1/8
    assert len(model.la.conv1) == len(model.la.conv2) == len(model.la.conv3) == 4


def test_output_is_la_times_sc_exactly():
    torch.manual_seed(1)
    model = _small_scn(n=4).eval()
    x = torch.randn(2, 1, 48, 64)
    out, la, sc = model(x, return_components=True)
    assert torch.equal(out, la * sc)
    assert torch.equal(out, model(x))
    assert sc.abs().max() < 1.2  # tanh (+ a little bicubic overshoot)
    la_only = _small_scn(n=4, mode="la_only")
    la_only.load_state_dict({k: v for k, v in model.state_dict().items() if k.startswith("la.")})
    out2, la2, sc2 = la_only.eval()(x, return_components=True)
    assert sc2 is None and torch.equal(out2, la2) and torch.equal(la2, la)


def test_parameter_counts_full_size():
    n, f = 19, 128
    la = _conv_params(1, f, 3) + 2 * _conv_params(f, f, 3) + 3 * 3 * _conv_params(f, f, 3) + _conv_params(f, n, 3)
    sc = _conv_params(n, f, 11) + 2 * _conv_params(f, f, 11) + _conv_params(f, n, 11)
    scn = SpatialConfigurationNet(1, n)
    assert count_parameters(scn) == la + sc == 6_200_486
    assert count_parameters(SpatialConfigurationNet(1, n, mode="la_only")) == la
    unet_down = _conv_params(1, f, 3) + _conv_params(f, f, 3) + 4 * 2 * _conv_params(f, f, 3)
    unet_up = 4 * (_conv_params(2 * f, f, 3) + _conv_params(f, f, 3))
    unet = LocalizationUNet(1, n)
    assert count_parameters(unet) == unet_down + unet_up + _conv_params(f, n, 1) == 3_102_483
    # 3D paper setting (64 filters, 7x7x7 SC, 4-level U-Net)
    scn3 = SpatialConfigurationNet(1, 28, spatial_dims=3, num_filters=64, sc_filters=64)
    la3 = _conv_params(1, 64, 3, 3) + 11 * _conv_params(64, 64, 3, 3) + _conv_params(64, 28, 3, 3)
    sc3 = _conv_params(28, 64, 7, 3) + 2 * _conv_params(64, 64, 7, 3) + _conv_params(64, 28, 7, 3)
    assert count_parameters(scn3) == la3 + sc3


def test_initialisation_statistics():
    torch.manual_seed(0)
    model = SpatialConfigurationNet(1, 19)
    for layer in (model.la.heatmap, model.sc.convs[-2]):
        assert layer.weight.std().item() == pytest.approx(1e-3, rel=0.05)
        assert abs(layer.weight.mean().item()) < 1e-4
        assert torch.all(layer.bias == 0)
    he = [model.la.conv1[0], model.la.conv2[1], model.la.conv3[3], model.sc.convs[0], model.sc.convs[2]]
    for layer in he:
        fan_in = layer.weight[0].numel()
        expected = math.sqrt(2.0 / (1.01 * fan_in))
        tol = 0.25 if layer.weight.numel() < 5000 else 0.03
        assert layer.weight.std().item() == pytest.approx(expected, rel=tol)
        assert torch.all(layer.bias == 0)
    slopes = {m.negative_slope for m in model.modules() if isinstance(m, torch.nn.LeakyReLU)}
    assert slopes == {0.1}
    unet = LocalizationUNet(1, 19)
    assert unet.heatmap.weight.std().item() == pytest.approx(1e-3, rel=0.1)


def test_initial_heatmaps_near_zero():
    torch.manual_seed(0)
    model = SpatialConfigurationNet(1, 5, num_filters=16, sc_filters=16).eval()
    out, la, sc = model(torch.rand(1, 1, 64, 64) * 2 - 1, return_components=True)
    assert la.abs().max() < 0.1 and sc.abs().max() < 0.1 and out.abs().max() < 1e-2


@pytest.mark.parametrize("name", ["scn", "unet"])
def test_overfit_single_image(name):
    torch.manual_seed(0)
    extra = {"sc_filters": 16} if name == "scn" else {"num_levels": 4}
    model = build_model(name, 1, 1, num_filters=16, dropout=0.0, **extra)
    x = torch.randn(1, 1, 64, 64)
    target = gaussian_heatmaps(torch.tensor([[[40.3, 22.7]]]), (64, 64), sigma=2.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = heatmap_loss(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    row, col = divmod(model(x)[0, 0].argmax().item(), 64)
    assert abs(col - 40.3) <= 2 and abs(row - 22.7) <= 2


@pytest.mark.parametrize("name", ["scn", "unet"])
def test_dropout_train_vs_eval(name):
    torch.manual_seed(0)
    extra = {"sc_filters": 8} if name == "scn" else {"num_levels": 3}
    model = build_model(name, 1, 2, num_filters=8, **extra)
    with torch.no_grad():  # make the heatmap layers non-negligible so dropout noise is visible
        if name == "scn":
            model.la.heatmap.weight.mul_(300)
            model.sc.convs[-2].weight.mul_(300)
        else:
            model.heatmap.weight.mul_(300)
    x = torch.randn(1, 1, 32, 32)
    model.train()
    assert not torch.allclose(model(x), model(x))
    model.eval()
    a, b = model(x), model(x)
    assert torch.equal(a, b)
    enable_mc_dropout(model)
    assert not torch.allclose(model(x), model(x))
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(m.p == 0.5 and m.training for m in drops)


def test_unet_dropout_only_in_deepest_two_levels():
    model = LocalizationUNet(1, 2, num_filters=4, num_levels=5)
    calls = []
    model.dropout.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[-1]))
    model.train()(torch.randn(1, 1, 32, 32))
    assert calls == [32 // 8, 32 // 16]


def test_non_divisible_sizes():
    torch.manual_seed(0)
    scn = _small_scn(n=2).eval()
    assert scn.size_multiple == 16
    for shape in [(50, 37), (17, 100), (9, 9)]:
        out, la, sc = scn(torch.randn(1, 1, *shape), return_components=True)
        assert out.shape == la.shape == sc.shape == (1, 2) + shape
    # padding is zeros at the far end only: coordinates are unchanged
    x = torch.randn(1, 1, 40, 36)
    padded = F.pad(x, (0, 12, 0, 8))
    torch.testing.assert_close(scn(x), scn(padded)[..., :40, :36], rtol=0, atol=0)
    unet = LocalizationUNet(1, 2, num_filters=4).eval()
    assert unet.size_multiple == 16
    assert unet(torch.randn(1, 1, 45, 33)).shape == (1, 2, 45, 33)
    scn3 = _small_scn(n=2, dims=3, num_filters=4, sc_filters=4).eval()
    assert scn3.size_multiple == 8
    assert scn3(torch.randn(1, 1, 13, 10, 9)).shape == (1, 2, 13, 10, 9)
    # the bare LA component states its requirement
    with pytest.raises(ValueError, match="divisible by 8"):
        LocalAppearance(1, 2, num_filters=4)(torch.randn(1, 1, 30, 32))
    with pytest.raises(ValueError):
        scn(torch.randn(1, 1, 1, 32, 32))


def test_separable_tricubic_is_a_tensor_product():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 4, 5, 3, dtype=torch.float64)
    size = (16, 20, 12)
    y = upsample_cubic(x, size)
    # same result whatever the axis order (tensor-product kernel)
    perm = (0, 1, 4, 2, 3)
    inv = (0, 1, 3, 4, 2)
    y2 = upsample_cubic(x.permute(perm), (size[2], size[0], size[1])).permute(inv)
    torch.testing.assert_close(y, y2)
    # a volume constant in depth is bicubic per slice
    x2 = x[:, :, :1].expand(1, 2, 4, 5, 3)
    ref = F.interpolate(x2[:, :, 0], size=size[1:], mode="bicubic", align_corners=False)
    torch.testing.assert_close(upsample_cubic(x2, size), ref.unsqueeze(2).expand(1, 2, *size))
    # upsampling a constant is exact
    torch.testing.assert_close(upsample_cubic(torch.ones(1, 1, 2, 2, 2), (8, 8, 8)), torch.ones(1, 1, 8, 8, 8))


def test_paper_optimizer_groups():
    model = _small_scn(n=2)
    extra = [torch.nn.Parameter(torch.ones(2))]
    opt = paper_optimizer(model, extra, l2_lambda=5e-4)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == pytest.approx(1e-3) and no_decay["weight_decay"] == 0.0
    assert decay["nesterov"] and decay["momentum"] == 0.99 and decay["lr"] == 1e-6
    assert all(p.dim() > 1 for p in decay["params"])
    n_total = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n_total == count_parameters(model) + 2


def test_bad_arguments():
    with pytest.raises(ValueError):
        SpatialConfigurationNet(1, 2, spatial_dims=1)
    with pytest.raises(ValueError):
        SpatialConfigurationNet(1, 2, mode="sc_only")
    with pytest.raises(ValueError):
        build_model("resnet", 1, 2)
