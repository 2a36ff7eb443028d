"""The fidelity ledger equals what lmkcore builds for the `paper` profile (lmkcore.training.ledger)."""
import io

import pytest

from lmkcore.errors import ConfigError
from lmkcore.training import ledger
from lmkcore.training.methods import METHODS
from lmkcore.training.profiles import get_profile


def test_every_paper_profile_configuration_equals_the_ledger():
    ledger._check_field_names()
    assert ledger.check_paper_configs(("thaler2021", "payer2019")) == []
    # every method the ledger names exists, and Thaler/Payer rows are checked on real fields
    for paper in ("thaler2021", "payer2019"):
        assert ledger.PAPER_METHODS[paper] and set(ledger.PAPER_METHODS[paper]) <= set(METHODS)
        assert sum(r.field is not None for r in ledger.ledger_rows(paper)) >= 15


def test_a_configuration_that_differs_is_reported():
    paper = get_profile("paper")
    drifted = paper.with_(lr_schedule="constant", clip_grad_norm=1000.0)
    problems = ledger.check_paper_configs(("thaler2021",), profile=drifted)
    assert any("lr schedule" in p for p in problems) and any("gradient clipping" in p for p in problems)
    # Payer rows keep their own schedule through the convention overrides: unaffected by the Thaler drift
    assert ledger.check_paper_configs(("payer2019",), profile=drifted) == []
    # and the quick profile is not the paper's
    assert ledger.check_paper_configs(("thaler2021",), profile=get_profile("quick"))


def test_rows_render_and_unknown_paper():
    table = ledger.ledger_table("thaler2021", "scn_fixed")
    assert list(table.columns) == ["method", "setting", "paper text", "authors' code", "lmkcore paper profile",
                                   "source", "deviation"]
    assert set(table["method"]) == {"*", "scn_fixed"}
    out = io.StringIO()
    ledger.show_ledger("thaler2021", "mccouat2022", "schobs2021", file=out)
    text = out.getvalue()
    assert "sigma = standard deviation" in text and "DEVIATION" in text and "PHD-Net" in text
    with pytest.raises(ConfigError):
        ledger.ledger_rows("nobody2020")


# ------------------------------------------------------------------ PHD-Net (Schobs et al. 2021)


def test_phdnet_paper_configuration_equals_the_schobs_rows():
    assert ledger.PAPER_METHODS["schobs2021"] == ("phdnet",)
    assert ledger.check_paper_configs(("schobs2021",)) == []
    checked = {r.field for r in ledger.ledger_rows("schobs2021") if r.field}
    # every setting the paper states is checked against what lmkcore builds
    for f in ("phdnet.batch_size", "phdnet.lr", "phdnet_train.optimizer", "phdnet.max_epochs", "phdnet.patience",
              "phdnet.independent", "phdnet.subimage", "phdnet.region_px", "phdnet.sigma_patches",
              "phdnet.blob_sigma_px", "phdnet_model.patch", "phdnet_model.head_filters", "phdnet.filters",
              "phdnet_run.THRESHOLD_FRACTION", "phdnet_label.displacement_loss_power",
              "phdnet_label.heatmap_loss_power", "phdnet_run.augmentation"):
        assert f in checked, f
    # the quick profile is not the paper's
    assert ledger.check_paper_configs(("schobs2021",), profile=get_profile("quick"))


@pytest.mark.parametrize("override, setting", [
    (dict(batch_size=16), "batch size"), (dict(lr=1e-4), "learning rate"), (dict(max_epochs=400), "epochs"),
    (dict(patience=50), "early stopping"), (dict(region_px=64), "candidate smoothing region"),
    (dict(subimage=96), "training samples"), (dict(sigma_patches=1.0), "heatmap std"),
    (dict(independent=False), "one network per landmark"), (dict(heatmap="binary"), "patch map"),
    (dict(filters=16), "parameters per landmark"), (dict(blob_sigma_px=2.0), "vote blob std"),
])
def test_a_changed_phdnet_paper_value_is_reported(monkeypatch, override, setting):
    from lmkcore.runs import phdnet as run

    original = run.phdnet_config
    monkeypatch.setattr(run, "phdnet_config", lambda profile, **kw: original(profile, **{**override, **kw}))
    problems = ledger.check_paper_configs(("schobs2021",))
    assert any(p.startswith(f"schobs2021/phdnet: {setting} (") for p in problems), problems


def test_phdnet_code_level_paper_values_are_checked(monkeypatch):
    import torch

    from lmkcore.runs import phdnet as run
    from lmkcore.training import phdnet_targets
    from lmkcore.training.augment import AugmentConfig

    monkeypatch.setattr(run, "THRESHOLD_FRACTION", 0.2)
    monkeypatch.setattr(run, "make_optimizer", lambda model, config: torch.optim.SGD(model.parameters(), lr=config.lr))
    # log2 labels (the authors' later code) instead of ln(1 + |d|); an unsquared (L1-like) loss
    monkeypatch.setattr(phdnet_targets, "encode_displacement", lambda d: torch.sign(d) * torch.log2(d.abs()))
    original = run.phdnet_config
    monkeypatch.setattr(run, "phdnet_config", lambda profile, **kw: original(profile, augment=AugmentConfig(), **kw))
    problems = "\n".join(ledger.check_paper_configs(("schobs2021",)))
    for setting in ("confidence threshold", "optimiser", "displacement target", "augmentation"):
        assert f"{setting} (" in problems, setting
    monkeypatch.undo()
    # squared vs unsquared loss (the authors' later code): the checked power follows the loss function
    loss = phdnet_targets.phdnet_loss
    monkeypatch.setattr(phdnet_targets, "phdnet_loss", lambda *a, **k: (loss(*a, **k)[0].sqrt(), loss(*a, **k)[1]))
    problems = ledger.check_paper_configs(("schobs2021",))
    assert [p.split(" (")[0] for p in problems] == ["schobs2021/phdnet: displacement loss"], problems


def test_phdnet_paper_dry_is_the_paper_configuration_with_one_epoch():
    from dataclasses import replace

    from lmkcore.runs.phdnet import phdnet_config

    paper, dry = phdnet_config(get_profile("paper")), phdnet_config(get_profile("paper-dry"))
    assert dry == replace(paper, max_epochs=1)
    assert ledger.check_paper_configs(("schobs2021",), profile=get_profile("paper-dry")) == [
        "schobs2021/phdnet: epochs (phdnet.max_epochs) is 1, ledger says 500"]
