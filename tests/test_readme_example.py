"""The README's "Use lmkcore from Python" example runs exactly as written, and the public API is light."""
from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    """The first ```python block after the heading "## Use lmkcore from Python"."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Use lmkcore from Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match, "README: no python block in 'Use lmkcore from Python'"
    return match.group(1)


def test_readme_example_is_short_and_runs_as_written(tmp_path, monkeypatch):
    code = readme_example()
    assert len(code.strip().splitlines()) <= 20
    monkeypatch.chdir(tmp_path)  # the example writes its cache folder relative to the working directory
    out = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), namespace)
    printed = out.getvalue()
    m = re.search(r"MRE (\d+\.\d+) mm, SDR 2 mm (\d+\.\d) %, SDR 4 mm (\d+\.\d) %", printed)
    assert m, printed
    # the printed numbers are the metrics of the result's errors (not made up by the example)
    errors = namespace["result"].errors_mm("fit")
    valid = errors[np.isfinite(errors)]
    assert float(m.group(1)) == round(float(valid.mean()), 2)
    assert float(m.group(2)) == round(100 * float(np.mean(valid <= 2)), 1)
    assert (tmp_path / "lmkcore-cache" / "experiments").is_dir()  # cached in the folder it names


def test_import_lmkcore_is_light_and_has_a_version():
    code = ("import sys, lmkcore; print(lmkcore.__version__); "
            "print(sorted(m for m in ('torch', 'pandas', 'scipy', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    import tomllib

    version = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"]["version"]
    assert out[0] == version
    assert out[1] == "[]"


def test_entry_points_resolve_to_the_package_functions():
    import lmkcore
    from lmkcore.analysis import metrics
    from lmkcore.runs.experiment import run_experiment

    assert lmkcore.run_experiment is run_experiment and lmkcore.metrics is metrics
    assert set(lmkcore.__all__) <= set(dir(lmkcore))
    try:
        lmkcore.not_an_entry_point
    except AttributeError as err:
        assert "not_an_entry_point" in str(err)
    else:
        raise AssertionError("unknown attribute did not raise")
