"""The shared figure style: fixed colours per concept and per method, PNG + PDF for every figure."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import is_color_like  # noqa: E402

from lmkcore.reporting import style  # noqa: E402
from lmkcore.training.methods import METHODS  # noqa: E402


def test_method_colours_are_fixed_valid_and_distinct_for_registered_methods():
    colours = [style.method_color(m) for m in METHODS]
    assert all(is_color_like(c) for c in colours)
    assert len(set(colours[:10])) == min(len(colours), 10)
    assert style.method_color("scn_aniso") == colours[list(METHODS).index("scn_aniso")]
    # an unregistered name gets a colour that does not depend on the process (no salted hash): another
    # interpreter with a different hash seed gives the same colour
    import os
    import subprocess
    import sys

    other = subprocess.run([sys.executable, "-c", "from lmkcore.reporting import style; print(style.method_color('my variant'))"],
                           capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert other.stdout.strip() == style.method_color("my variant")
    assert style.method_color("my variant") in style._METHOD_PALETTE


def test_concept_colours_and_cmaps_are_valid_and_apply_style_sets_rc(tmp_path):
    assert all(is_color_like(c) for c in style.COLORS.values())
    assert set(style.CMAPS) == {"image", "heatmap"} and all(c in plt.colormaps() for c in style.CMAPS.values())
    style.apply_style()
    assert matplotlib.rcParams["savefig.bbox"] == "tight" and matplotlib.rcParams["image.cmap"] == "gray"
    fig = plt.figure()
    paths = style.save_figure(fig, tmp_path, "x", "-", notebook="99", profile="smoke", dataset="synthetic")
    plt.close(fig)
    assert [p.name for p in paths] == ["x.png", "x.pdf"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].read_bytes()[:4] == b"%PDF"
