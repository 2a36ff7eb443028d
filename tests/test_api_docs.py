"""The API reference (pdoc, from the NumPy docstrings) builds without a single warning."""
from __future__ import annotations

import pytest

pytest.importorskip("pdoc", reason="pdoc is in the dev extra: pip install -e '.[dev]'")

from lmkcore.cli import build_api_docs  # noqa: E402


@pytest.mark.slow
def test_api_reference_builds_without_warnings(tmp_path):
    index, problems = build_api_docs(tmp_path / "api")
    assert problems == [], "\n".join(problems)  # warnings are errors
    assert index.is_file()
    pages = {p.relative_to(tmp_path / "api").as_posix() for p in (tmp_path / "api").rglob("*.html")}
    for page in ("lmkcore.html", "lmkcore/cli.html", "lmkcore/progress.html", "lmkcore/reporting/plotting.html",
                 "lmkcore/analysis/fitting.html", "lmkcore/training/trainer.html"):
        assert page in pages, page
    # NumPy sections are rendered, not shown as raw text
    cli = (tmp_path / "api" / "lmkcore" / "cli.html").read_text()
    assert "ensure_writable" in cli and "<h6" in cli and "Raises" in cli
