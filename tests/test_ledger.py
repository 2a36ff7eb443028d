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
