"""The run store, the shared result type and the package layering (issue 12)."""
from __future__ import annotations

import ast
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lmkcore.errors import ConfigError
from lmkcore.runs.store import (RunStore, data_fingerprint, forward_batches, has_result, load_trained, read_arrays,
                                read_result, write_arrays, write_result)

PACKAGE = Path(__file__).resolve().parents[1] / "lmkcore"


@pytest.fixture
def tiny_record(tmp_path):
    """Four 32 x 40 px PNG images, 3 landmarks, senior + junior annotations (a real, small record)."""
    from PIL import Image

    from lmkcore.data.records import LandmarkDataset

    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        p = tmp_path / "img" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 32), dtype=np.uint8)).save(p)
        paths.append(p)
    senior = rng.uniform(4, 28, (4, 3, 2))
    return LandmarkDataset(name="tiny", ids=[f"i{i}" for i in range(4)], image_paths=paths, landmark_names=("a", "b", "c"),
                           annotations={"senior": senior, "junior": senior + 0.5}, reference="senior",
                           spacing=np.full((4, 2), 0.1), image_size=np.tile([32, 40], (4, 1)),
                           splits={"train": ["i0", "i1"], "test_all": ["i2", "i3"]})


# ------------------------------------------------------------------------------------------------ layering
def _imports(path: Path) -> set[str]:
    """Absolute lmkcore modules imported anywhere in ``path`` (top level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("lmkcore"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("lmkcore"))
    return out


def _module_graph(top_level_only: bool) -> dict[str, set[str]]:
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        if top_level_only:
            tree = ast.parse(path.read_text(encoding="utf-8"))
            found = set()
            for node in tree.body:  # imports executed when the module is imported
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module)
                    found.update(f"{node.module}.{a.name}" for a in node.names)
                elif isinstance(node, ast.Import):
                    found.update(a.name for a in node.names)
        else:
            found = _imports(path)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_no_import_cycles_among_module_level_imports():
    graph = _module_graph(top_level_only=True)
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for n in graph:
        if n not in state:
            visit(n, [n])


def test_layering_analysis_and_data_never_import_reporting_or_runs():
    graph = _module_graph(top_level_only=False)  # lazy imports inside functions count too
    low = ("lmkcore.analysis", "lmkcore.data", "lmkcore.synthetic", "lmkcore.models")
    bad = {m: sorted(d for d in deps if d.startswith(("lmkcore.reporting", "lmkcore.runs")))
           for m, deps in graph.items() if m.startswith(low)}
    assert {m: d for m, d in bad.items() if d} == {}


def test_the_checkpoint_path_and_point_error_arithmetic_are_written_once():
    sources = {p: p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")}
    assert [p.name for p, s in sources.items() if "checkpoint.pt" in s] == ["store.py"]
    norm = [p.relative_to(PACKAGE).as_posix() for p, s in sources.items()
            if "linalg.norm((" in s.replace(" ", "") and "spacing" in s]
    assert norm == []  # ||(pred - ref) * spacing|| lives in analysis.metrics.point_errors only


# ------------------------------------------------------------------------------------------------ store
def test_store_paths_and_default_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LMKCORE_CACHE", str(tmp_path / "c"))
    store = RunStore()
    assert store.root == tmp_path / "c"
    assert store.model_checkpoint("k") == tmp_path / "c" / "models" / "k" / "checkpoint.pt"
    assert store.result_folder("k", "phdnet") == tmp_path / "c" / "phdnet" / "k"
    assert RunStore.of(store) is store and RunStore.of(tmp_path).root == tmp_path
    with pytest.raises(ValueError):
        store.result_folder("k", "elsewhere")


def test_results_round_trip_and_concurrent_writers_never_leave_partial_files(tmp_path):
    folder = tmp_path / "r"
    assert not has_result(folder)
    arrays = {"a": np.arange(6.0).reshape(2, 3), "none": None}
    write_result(folder, arrays, {"key": "x", "ids": ["1", "2"]})
    meta, back = read_result(folder)
    assert meta == {"key": "x", "ids": ["1", "2"]} and set(back) == {"a"}
    np.testing.assert_array_equal(back["a"], arrays["a"])

    errors = []

    def writer(v):
        try:
            for _ in range(20):
                write_arrays(tmp_path / "shared.npz", {"v": np.full(1000, v)})
        except Exception as err:  # pragma: no cover - the assertion below reports it
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(v,)) for v in (1.0, 2.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = read_arrays(tmp_path / "shared.npz")["v"]
    assert not errors and np.unique(got).size == 1 and got[0] in (1.0, 2.0)  # one writer's file, whole
    assert not list(tmp_path.glob(".*.tmp"))


def test_fingerprint_computed_once_per_record_and_follows_replaced_annotations(tiny_record, monkeypatch):
    import lmkcore.runs.store as store_mod

    calls = []
    real = store_mod.data_fingerprint
    monkeypatch.setattr(store_mod, "data_fingerprint", lambda r: calls.append(1) or real(r))
    fp = RunStore.fingerprint(tiny_record)
    assert RunStore.fingerprint(tiny_record) == fp == real(tiny_record) and len(calls) == 1
    other = tiny_record.with_reference_annotations("extra", tiny_record.landmarks + 1.0)
    assert RunStore.fingerprint(other) != fp and len(calls) == 2
    assert "extra" not in tiny_record.annotations  # records are never changed in place


def test_load_trained_rebuilds_the_network_without_training(tmp_path):
    from lmkcore.training.trainer import TrainConfig, build_network, build_target, save_checkpoint

    cfg = TrainConfig(model="unet", num_filters=4, iterations=1)
    torch.manual_seed(3)
    net, target = build_network(cfg, 2), build_target(cfg, 2)
    path = tmp_path / "m" / "checkpoint.pt"
    save_checkpoint(path, {"model": net.state_dict(), "target": target.state_dict(),
                           "config": __import__("json").dumps(cfg.to_dict())})
    model, _ = load_trained(cfg, 2, path)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        np.testing.assert_array_equal(model(x).numpy(), net.eval()(x).numpy())
    with pytest.raises(ConfigError, match="another configuration"):
        load_trained(replace(cfg, num_filters=8), 2, path)
    with pytest.raises(ConfigError, match="no trained model"):
        load_trained(cfg, 2, tmp_path / "absent.pt")


def test_forward_batches_match_one_forward_pass_per_image_in_order(tiny_record, tmp_path):
    from lmkcore.data.loader import LandmarkImageDataset
    from lmkcore.training.trainer import normalise_images

    ds = LandmarkImageDataset(tiny_record, size=(16, 20), cache_dir=tmp_path)
    model = torch.nn.Conv2d(1, 2, 3, padding=1).eval()
    got = list(forward_batches(model, ds, batch_size=2))
    assert [b.start for b in got] == list(range(0, len(ds), 2))
    out = torch.cat([b.output for b in got])
    with torch.no_grad():
        ref = torch.cat([model(normalise_images(ds[i]["image"][None])) for i in range(len(ds))])
    torch.testing.assert_close(out, ref)
    padded = next(iter(forward_batches(model, ds, batch_size=2, pad_multiple=8))).output
    assert padded.shape[-2:] == (24, 16)


# ------------------------------------------------------------------------------------------------ result type
def _result(tiny_record):
    from lmkcore.runs.experiment import ExperimentResult

    m, n = len(tiny_record.ids), len(tiny_record.landmark_names)
    ref = tiny_record.landmarks.astype(np.float64)
    spacing = np.tile([0.5, 2.0], (m, 1))
    z = np.zeros((m, n))
    return ExperimentResult(key="k", config={}, ids=list(tiny_record.ids), landmark_names=list(tiny_record.landmark_names),
                            spacing=spacing, reference_px=ref, truth_px=None, pred_argmax_px=ref + [3.0, 0.0],
                            pred_fit_px=ref + [0.0, 1.0], peak=z, fit_cov_mm=np.full((m, n, 2, 2), np.nan),
                            fit_amplitude=z, fit_ok=z.astype(bool), learned_cov_mm=np.full((n, 2, 2), np.nan),
                            heatmap_crops=None, crop_origin=None, work_size=(16, 20), work_spacing=spacing)


def test_errors_mm_is_the_metrics_point_error_of_each_strategy(tiny_record):
    from lmkcore.runs.result import LandmarkResult

    res = _result(tiny_record)
    assert isinstance(res, LandmarkResult)
    np.testing.assert_allclose(res.errors_mm("fit"), 2.0)     # 1 px along y at 2 mm/px
    np.testing.assert_allclose(res.errors_mm("argmax"), 1.5)  # 3 px along x at 0.5 mm/px
    with pytest.raises(ConfigError, match="errors against 'target'"):  # one word: the reference annotation set
        res.errors_mm("fit", "target")
    np.testing.assert_allclose(res.offsets_mm()[..., 1], 2.0)
    assert res.errors_mm(ids=[res.ids[1], "unknown"]).shape == (1, len(res.landmark_names))
    with pytest.raises(ConfigError, match="no known truth"):
        res.errors_mm(against="truth")
    with pytest.raises(ConfigError, match="no prediction 'mcd'"):
        res.errors_mm("mcd")
    hot = replace(res, hottest_px=res.reference_px + [0.0, 2.0])
    np.testing.assert_allclose(hot.errors_mm("hottest"), 4.0)


def test_result_files_written_before_the_rename_still_load(tiny_record, tmp_path):
    from lmkcore.runs.experiment import ExperimentResult

    res = _result(tiny_record)
    res.save(tmp_path / "new")
    meta, arrays = read_result(tmp_path / "new")
    arrays["target_px"] = arrays.pop("reference_px")  # the former on-disk name
    write_result(tmp_path / "old", arrays, meta)
    back = ExperimentResult.load(tmp_path / "old")
    np.testing.assert_array_equal(back.reference_px, res.reference_px)
    np.testing.assert_array_equal(back.errors_mm(), res.errors_mm())


def test_experiment_keys_are_unchanged_by_the_reference_rename(tiny_record):
    import hashlib
    import json

    from lmkcore.runs.experiment import RESULT_VERSION, ExperimentConfig, experiment_key
    from lmkcore.training.trainer import TrainConfig

    cfg = ExperimentConfig(train=TrainConfig(iterations=2), reference=tiny_record.reference)
    old_style = cfg.to_dict()
    old_style["target"] = old_style.pop("reference")
    blob = json.dumps({"config": old_style, "data": data_fingerprint(tiny_record), "v": RESULT_VERSION}, sort_keys=True)
    assert experiment_key(cfg, tiny_record) == hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert ExperimentConfig.from_dict(old_style) == cfg  # configs stored with 'target' read back


def test_anisotropic_selection_matches_a_brute_force_ranking():
    from lmkcore.analysis.covariance import params_to_cov
    from lmkcore.analysis.uncertainty import anisotropic_selection

    ratios = np.array([1.1, 4.0, 2.0, 1.0, 3.0, 1.5])
    cov = params_to_cov(np.zeros(6), ratios, np.ones(6))
    ranked = sorted(range(6), key=lambda k: ratios[k])
    assert anisotropic_selection(cov, 3, 2) == ranked[::-1][:3] + ranked[:2] == [1, 4, 2, 3, 0]


def test_paper_tables_come_from_the_references_module():
    from lmkcore.reporting import published, references

    assert list(published.PAPER_TABLE1["PE mean"]) == [v[0] for v in references.SCHOBS_TABLE1.values()]
    assert published.PAPER_TABLE2.loc["PHD-Net [paper]", "SA HiC (56 %)"] == "2.97 ± 2.20"
    assert list(references.mccouat_table1("test2").iloc[0]) == [1.46, 74.63, 83.58, 87.21, 93.79]
    assert references.mccouat_table2().loc["[paper] Erroneous", "# landmarks"] == 290


def test_sweep_grids_per_profile():
    from lmkcore.training.profiles import get_profile, sweep_grid

    quick, paper, dry, smoke = (sweep_grid(get_profile(p)) for p in ("quick", "paper", "paper-dry", "smoke"))
    assert quick.iterations == get_profile("quick").iterations // 2 and paper.iterations is None
    assert paper.widths[-1] == 512 and paper.alphas[0] is None and 3.0 in paper.sigmas  # Payer et al.: 512 px, default α
    for name in ("alphas", "sigmas", "widths"):  # the dry run takes one (two for α) of the paper's values
        assert set(getattr(dry, name)) <= set(getattr(paper, name))
    assert smoke.widths == [get_profile("smoke").input_width] and len(smoke.alphas) == len(smoke.sigmas) == 1


def test_reference_keyword_sets_the_annotation_set_and_target_the_heatmap_mode(tiny_record):
    from lmkcore.training.methods import experiment_config
    from lmkcore.training.profiles import get_profile

    cfg = experiment_config(get_profile("smoke"), tiny_record, "scn_iso", target="fixed", reference="junior")
    assert cfg.train.target == "fixed" and cfg.reference == "junior"
    assert experiment_config(get_profile("smoke"), tiny_record, "scn_iso").reference == tiny_record.reference == "senior"
