"""K-fold cross-validation (lmkcore.runs.crossval): fold detection, pooling, a smoke-size run."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lmkcore.data.records import LandmarkDataset
from lmkcore.errors import ConfigError
from lmkcore.runs.crossval import (CrossValidation, cv_folds, cv_junior_skip_reason, has_cv_folds, pool_results,
                                   run_cross_validation)
from lmkcore.runs.experiment import ExperimentResult


def _record(splits: dict[str, list[str]], m: int = 8) -> LandmarkDataset:
    rng = np.random.default_rng(0)
    ids = [f"i{i}" for i in range(m)]
    return LandmarkDataset(name="tiny", ids=ids, image_paths=[f"/nowhere/{i}.png" for i in ids],
                           landmark_names=("a", "b"), annotations={"senior": rng.uniform(0, 30, (m, 2, 2))},
                           reference="senior", spacing=np.full((m, 2), 0.1), image_size=np.tile([32, 40], (m, 1)),
                           splits=splits)


def _folds_splits(k: int, m: int) -> dict[str, list[str]]:
    ids = [f"i{i}" for i in range(m)]
    out = {}
    for f in range(k):
        val = ids[f::k]
        out[f"cv{f + 1}/val"] = val
        out[f"cv{f + 1}/train"] = [i for i in ids if i not in val]
    return out


# ------------------------------------------------------------------------------------------------ cv_folds
def test_cv_folds_found_in_order_and_stop_at_first_gap():
    splits = _folds_splits(4, 8)
    splits.update({"train": ["i0"], "test_all": ["i1"], "cv6/train": ["i0"], "cv6/val": ["i1"]})  # cv5 missing
    assert cv_folds(_record(splits)) == [(f"cv{k}/train", f"cv{k}/val") for k in (1, 2, 3, 4)]
    obs = {f"obs_{k}": v for k, v in _folds_splits(2, 8).items()}
    assert cv_folds(_record({**splits, **obs}), "obs_cv") == [("obs_cv1/train", "obs_cv1/val"),
                                                              ("obs_cv2/train", "obs_cv2/val")]


def test_cv_folds_errors_name_the_problem():
    with pytest.raises(ConfigError, match=r"no cross-validation folds.*available splits: test_all, train"):
        cv_folds(_record({"train": ["i0"], "test_all": ["i1"]}))
    with pytest.raises(ConfigError, match="cv1/val"):  # a fold needs both halves
        cv_folds(_record({"cv1/train": ["i0"]}))
    overlap = _folds_splits(2, 8)
    overlap["cv2/val"] = overlap["cv2/val"] + ["i0"]  # i0 is in cv1/val too
    overlap["cv2/train"] = [i for i in overlap["cv2/train"] if i != "i0"]
    with pytest.raises(ConfigError, match=r"val splits 'cv1/val' and 'cv2/val' overlap.*'i0'"):
        cv_folds(_record(overlap))
    leak = _folds_splits(2, 8)
    leak["cv2/train"] = leak["cv2/train"] + ["i1"]  # i1 is cv2's val image
    with pytest.raises(ConfigError, match=r"'cv2/val' are also in 'cv2/train'"):
        cv_folds(_record(leak))


def test_cv_junior_needs_the_junior_reference_and_folds():
    folds = _folds_splits(4, 8)
    rec = _record(folds)
    rec_j = replace(rec, annotations={**rec.annotations, "junior": rec.annotations["senior"] + 1}).with_reference("junior")
    assert has_cv_folds(rec) and cv_junior_skip_reason(rec_j) is None
    assert "reference annotation set is 'senior'" in cv_junior_skip_reason(rec)
    no_folds = replace(rec_j, splits={"train": ["i0"], "test_all": ["i1"]})
    assert not has_cv_folds(no_folds) and "no cv1/train" in cv_junior_skip_reason(no_folds)


# ------------------------------------------------------------------------------------------------ pooling
def _fake_result(ids: list[str], rng, n: int = 3, seconds: float = 1.0, mc: bool = True) -> ExperimentResult:
    m = len(ids)
    a = lambda *s: rng.normal(size=s)  # noqa: E731
    cov = np.einsum("mnij,mnkj->mnik", a(m, n, 2, 2), a(m, n, 2, 2)) + np.eye(2)
    return ExperimentResult(
        key=f"k{ids[0]}", config={"train_split": "x", "eval_split": "y"}, ids=list(ids), landmark_names=list("abc"[:n]),
        spacing=rng.uniform(0.1, 0.2, (m, 2)), reference_px=a(m, n, 2) * 10 + 50, truth_px=None,
        pred_argmax_px=a(m, n, 2) * 10 + 50, pred_fit_px=a(m, n, 2) * 10 + 50, peak=rng.uniform(size=(m, n)),
        fit_cov_mm=cov, fit_amplitude=a(m, n), fit_ok=rng.uniform(size=(m, n)) > 0.2,
        learned_cov_mm=np.eye(2) * rng.uniform(1, 2, (n, 1, 1)), heatmap_crops=a(m, n, 5, 5).astype(np.float16),
        crop_origin=rng.integers(0, 9, (m, n, 2)), work_size=(16, 20), work_spacing=rng.uniform(0.3, 0.4, (m, 2)),
        history=[{"iteration": 0, "loss": 1.0}, {"iteration": 5, "loss": 0.5}], train_seconds=seconds,
        mc_points_px=a(m, 4, n, 2) if mc else None)


def test_pooled_result_equals_concatenated_folds():
    rng = np.random.default_rng(1)
    splits = _folds_splits(4, 14)  # folds of 4, 4, 3, 3 images
    folds = cv_folds(_record(splits, 14))
    results = [_fake_result(splits[va], rng, seconds=k + 1.0, mc=k != 2) for k, (_, va) in enumerate(folds)]
    cv = CrossValidation(folds, results)
    pooled = cv.pooled
    assert sorted(pooled.ids) == sorted(f"i{i}" for i in range(14))  # every val id exactly once
    assert len(pooled.ids) == len(set(pooled.ids)) == 14
    for prediction in ("fit", "argmax"):
        brute = np.concatenate([r.errors_mm(prediction) for r in results])
        np.testing.assert_array_equal(pooled.errors_mm(prediction), brute)
    for k, r in enumerate(results, start=1):  # ids= selects exactly one fold's rows
        np.testing.assert_array_equal(pooled.errors_mm(ids=r.ids), r.errors_mm())
        np.testing.assert_array_equal(pooled.fit_cov_mm[pooled.rows(r.ids)], r.fit_cov_mm)
        assert all(cv.fold_of(i) == k for i in r.ids)
    np.testing.assert_allclose(pooled.learned_cov_mm, np.mean([r.learned_cov_mm for r in results], axis=0))
    assert pooled.train_seconds == 1 + 2 + 3 + 4
    assert [h["fold"] for h in pooled.history] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert pooled.mc_points_px is None  # fold 3 has no MC samples
    assert pooled.config["eval_split"] == "cv1/val+cv2/val+cv3/val+cv4/val"
    assert pooled.heatmap_crops.shape == (14, 3, 5, 5) and pooled.spacing.shape == (14, 2)


def test_pool_results_rejects_overlapping_or_mismatched_folds():
    rng = np.random.default_rng(2)
    with pytest.raises(ConfigError, match="'i1' was evaluated by more than one fold"):
        pool_results([_fake_result(["i0", "i1"], rng), _fake_result(["i1", "i2"], rng)])
    other = replace(_fake_result(["i3"], rng), work_size=(32, 40))
    with pytest.raises(ConfigError, match="working size"):
        pool_results([_fake_result(["i0"], rng), other])
    with pytest.raises(ConfigError, match="2 folds but 1 results"):
        CrossValidation([("cv1/train", "cv1/val"), ("cv2/train", "cv2/val")], [_fake_result(["i0"], rng)])


# ------------------------------------------------------------------------------------------------ smoke run
def test_run_cross_validation_trains_each_fold_on_its_train_split_only(session_cache, tmp_path, monkeypatch):
    import lmkcore
    import lmkcore.runs.experiment as experiment
    from lmkcore.training.methods import experiment_config
    from lmkcore.training.profiles import get_profile

    record = lmkcore.load_dataset("synthetic", n_images=40, width=64, cache_dir=session_cache)
    record = record.with_reference("junior")
    config = experiment_config(get_profile("smoke"), record, "scn_aniso", iterations=2)
    trained_on = []
    real_train = experiment.train

    def spy(train_config, train_ds, **kw):
        trained_on.append(list(train_ds.record.ids))
        return real_train(train_config, train_ds, **kw)

    monkeypatch.setattr(experiment, "train", spy)
    cv = run_cross_validation(record, config, tmp_path / "cache", progress=False)
    folds = cv_folds(record)
    assert cv.folds == folds and len(folds) == 4
    assert len(trained_on) == 4
    for (tr, va), ids, r in zip(folds, trained_on, cv.results):
        assert ids == record.splits[tr] and not set(ids) & set(record.splits[va])
        assert r.ids == record.splits[va]
        assert r.config["train_split"] == tr and r.config["eval_split"] == va and r.config["reference"] == "junior"
        np.testing.assert_array_equal(r.reference_px, record.annotations["junior"][record.index_of(r.ids)])
    pooled = cv.pooled
    assert sorted(pooled.ids) == sorted(record.ids)  # 4 x 10 val images = all 40, each once
    assert pooled.errors_mm().shape == (40, len(record.landmark_names))
    again = run_cross_validation(record, config, tmp_path / "cache", progress=False)  # every fold cached
    assert len(trained_on) == 4
    np.testing.assert_array_equal(again.pooled.pred_fit_px, pooled.pred_fit_px)


def test_notebook_context_cross_validation_mirrors_experiment(session_cache, tmp_path):
    from lmkcore.reporting.notebook import setup_notebook
    from lmkcore.runs.crossval import CrossValidation

    ctx = setup_notebook("test_crossval", "smoke", "synthetic", device="cpu", figures_dir=str(tmp_path / "fig"),
                         cache_dir=str(session_cache))
    record = ctx.load_dataset().with_reference("junior")
    cv = ctx.cross_validation(record, "scn_aniso", progress=False, iterations=2)
    assert isinstance(cv, CrossValidation) and cv.folds == cv_folds(record)
    for (tr, va), r in zip(cv.folds, cv.results):
        assert (r.config["train_split"], r.config["eval_split"], r.config["reference"]) == (tr, va, "junior")
        assert r.config["train"]["iterations"] == 2 and r.config["train"]["target"] == "learned_aniso"
    with pytest.raises(ConfigError, match="no cross-validation folds obs_cv1/train"):
        ctx.cross_validation(record, "scn_aniso", prefix="obs_cv")


def test_explicit_fold_splits_need_no_default_split_pair():
    """A record holding only fold splits (e.g. the 11-observer folds of a paper-dry record, where neither
    train/test_all nor cv1/val survive) gets a config for the splits it names; without them, one clear error."""
    from lmkcore.training.methods import experiment_config
    from lmkcore.training.profiles import get_profile

    splits = {k: v for k, v in _folds_splits(2, 8).items()}
    record = _record({f"obs_{k}": v for k, v in splits.items()})
    cfg = experiment_config(get_profile("smoke"), record, "scn_aniso", train_split="obs_cv1/train",
                            eval_split="obs_cv1/val")
    assert (cfg.train_split, cfg.eval_split) == ("obs_cv1/train", "obs_cv1/val")
    with pytest.raises(ConfigError, match="no train/test_all or cv1 splits"):
        experiment_config(get_profile("smoke"), record, "scn_aniso")


def test_notebook_context_cross_validation_on_a_record_with_only_fold_splits(tmp_path, monkeypatch):
    """ctx.cross_validation builds its configs from the folds, not from a default split pair the record
    may lack (paper-dry's 11-observer record: only obs_cv* splits)."""
    import lmkcore.runs.crossval as crossval
    from lmkcore.reporting.notebook import setup_notebook

    seen = {}
    monkeypatch.setattr(crossval, "run_cross_validation",
                        lambda record, config, cache_dir, folds, **kw: seen.update(config=config, folds=folds))
    ctx = setup_notebook("test_crossval", "smoke", "synthetic", device="cpu", figures_dir=str(tmp_path / "fig"),
                         cache_dir=str(tmp_path / "cache"))
    record = _record({f"obs_{k}": v for k, v in _folds_splits(2, 8).items()})
    ctx.cross_validation(record, "scn_aniso", prefix="obs_cv", progress=False)
    assert seen["folds"] == [("obs_cv1/train", "obs_cv1/val"), ("obs_cv2/train", "obs_cv2/val")]
    assert (seen["config"].train_split, seen["config"].eval_split) == ("obs_cv1/train", "obs_cv1/val")
