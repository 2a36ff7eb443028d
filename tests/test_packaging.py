"""Packaging: LICENSE matches the declared licence, complete pyproject metadata, environment.yml consistent with it,
``python -m lmkcore`` is the command-line entry point."""
from __future__ import annotations

import re
import tomllib

import yaml

from conftest import REPO


def _req(spec: str) -> tuple[str, str]:
    """``"SimpleITK>=2.2"`` -> ``("simpleitk", ">=2.2")`` (name normalised as pip/conda compare them)."""
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*$", spec)
    assert m, spec
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def test_license_file_is_bsd3_of_the_lmkcore_developers_and_declared():
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License")
    assert "Copyright (c) 2026, the lmkcore developers" in text
    assert "Neither the name of the copyright holder nor the names of its" in text  # the third clause
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "BSD-3-Clause" and project["license-files"] == ["LICENSE"]


def test_pyproject_metadata_is_complete():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = data["project"]
    for key in ("name", "version", "description", "readme", "requires-python", "authors", "keywords",
                "classifiers", "dependencies"):
        assert project.get(key), key
    assert project["authors"] == [{"name": "the lmkcore developers"}]
    assert any(c.startswith("Programming Language :: Python :: 3.") for c in project["classifiers"])
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # SPDX expression instead (PEP 639)
    assert project["scripts"]["lmkcore"] == "lmkcore.cli:main"
    dev = dict(_req(s) for s in project["optional-dependencies"]["dev"])
    assert {"pytest", "pdoc", "playwright"} <= set(dev)
    assert (REPO / "lmkcore" / "__main__.py").read_text().count("from lmkcore.cli import main") == 1


def test_environment_yml_has_every_dependency_of_pyproject_with_the_same_bounds():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda, pip = {}, {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip.update(_req(s) for s in dep["pip"] if not s.startswith("-e"))
        else:
            conda.update([_req(dep)])
    available = {**conda, **pip}
    wanted = [_req(s) for s in project["dependencies"] + project["optional-dependencies"]["dev"]]
    for name, bound in wanted:
        assert name in available, f"environment.yml lacks {name}"
        assert available[name] == bound, f"{name}: environment.yml {available[name]!r} vs pyproject {bound!r}"
    assert conda["python"] == project["requires-python"]
    assert any(s.strip() == "-e .[dev]" for d in env["dependencies"] if isinstance(d, dict) for s in d["pip"])
