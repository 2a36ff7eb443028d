"""The run store: the one place that knows where runs live on disk and how they are read and written.

Layout under a cache folder (default :func:`default_cache_dir`)::

    images/                       decoded, resized images (lmkcore.data.image_cache)
    models/<model key>/checkpoint.pt   trained heatmap networks (lmkcore.training.trainer)
    experiments/<key>/result.npz|json  cached ExperimentResult (+ calibration_<tag>.npz beside it)
    phdnet/<key>/result.npz|json, model.pt   cached PHD-Net runs

Everything else asks this module for a path (:meth:`RunStore.model_checkpoint`,
:meth:`RunStore.result_folder`...), for a data fingerprint (:meth:`RunStore.fingerprint`,
computed once per record object), for a trained network without training code
(:func:`load_trained`), for batched forward passes (:func:`forward_batches`) and for
reading and writing artefacts. Artefacts are read and written only by
:func:`write_result` / :func:`read_result` (a result folder: ``result.npz`` + ``result.json``)
and :func:`write_arrays` / :func:`read_arrays` (one ``.npz``); writes are atomic with unique
temporary names (:func:`lmkcore.data.formats.atomic_write_bytes`), so two writers never see
a partial file. Every artefact carries a SHA-256 beside it (:mod:`lmkcore.data.integrity`),
verified on read: :func:`has_result` treats a result that fails as absent (it is recomputed
from its checkpoint), :func:`read_arrays` / :func:`read_result` raise one error naming the
file and what to delete.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from lmkcore.cachedir import default_cache_dir
from lmkcore.data.integrity import IntegrityError, read_verified, repair_warning, verify_file, write_verified
from lmkcore.data.records import LandmarkDataset

__all__ = ["default_cache_dir", "data_fingerprint", "RunStore", "write_result", "read_result", "has_result",
           "write_arrays", "read_arrays", "load_trained", "ForwardBatch", "forward_batches"]

RESULT_FILES = ("result.npz", "result.json")


def data_fingerprint(record: LandmarkDataset) -> str:
    """Hash of what a model sees: ids, all annotations, spacing, image file names and sizes.

    Prefer :meth:`RunStore.fingerprint`, which computes it once per record object.
    """
    h = hashlib.sha256()
    h.update(record.name.encode())
    h.update("\n".join(record.ids).encode())
    for key in sorted(record.annotations):
        h.update(key.encode())
        h.update(np.ascontiguousarray(record.annotations[key], dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(record.spacing, dtype=np.float64).tobytes())
    for p in record.image_paths:
        p = Path(p)
        h.update(f"{p.name}:{p.stat().st_size if p.exists() else -1}".encode())
    return h.hexdigest()


#: id(record) -> (weak reference, identity of its annotation arrays, fingerprint)
_FINGERPRINTS: dict[int, tuple[Any, tuple, str]] = {}


def _annotation_identity(record: LandmarkDataset) -> tuple:
    return (id(record.annotations), tuple((k, id(v)) for k, v in sorted(record.annotations.items())),
            id(record.ids), id(record.spacing), id(record.image_paths))


@dataclass(frozen=True)
class RunStore:
    """Paths of one cache folder. ``RunStore(None)`` uses :func:`default_cache_dir`."""

    root: Path

    def __init__(self, root: str | os.PathLike | None = None):
        object.__setattr__(self, "root", Path(root).expanduser() if root is not None else default_cache_dir())

    @classmethod
    def of(cls, cache_dir: "str | os.PathLike | RunStore | None") -> "RunStore":
        """``cache_dir`` as a store (a store is returned as is)."""
        return cache_dir if isinstance(cache_dir, RunStore) else cls(cache_dir)

    # -- fingerprints ---------------------------------------------------------------------------
    @staticmethod
    def fingerprint(record: LandmarkDataset) -> str:
        """:func:`data_fingerprint` of ``record``, computed once per record object (recomputed when its
        annotation arrays, ids, spacing or paths are replaced)."""
        ident = _annotation_identity(record)
        hit = _FINGERPRINTS.get(id(record))
        if hit is not None and hit[0]() is record and hit[1] == ident:
            return hit[2]
        fp = data_fingerprint(record)
        key = id(record)
        try:
            ref = weakref.ref(record, lambda _r, k=key: _FINGERPRINTS.pop(k, None))
        except TypeError:  # pragma: no cover - records are weak-referenceable dataclasses
            return fp
        _FINGERPRINTS[key] = (ref, ident, fp)
        return fp

    # -- paths ----------------------------------------------------------------------------------
    @property
    def images_dir(self) -> Path:
        """Decoded, resized images (:mod:`lmkcore.data.image_cache`)."""
        return self.root / "images"

    def model_checkpoint(self, model_key: str) -> Path:
        """Checkpoint of a trained heatmap network (written by :func:`lmkcore.training.trainer.train`)."""
        return self.root / "models" / model_key / "checkpoint.pt"

    def result_folder(self, key: str, kind: str = "experiments") -> Path:
        """Folder of a cached result: ``kind`` ``"experiments"`` or ``"phdnet"``."""
        if kind not in ("experiments", "phdnet"):
            raise ValueError(f"unknown result kind {kind!r}")
        return self.root / kind / key

    def phdnet_model(self, key: str) -> Path:
        """Weights of a PHD-Net run (beside its result)."""
        return self.result_folder(key, "phdnet") / "model.pt"


def has_result(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a complete result whose files match their checksums.

    A result that fails verification (truncated, 0-byte, garbage or replaced
    files, or no checksum) counts as absent, with a
    :class:`~lmkcore.data.integrity.CacheRepairWarning`, so callers recompute it
    (from the cached checkpoint, without retraining).
    """
    paths = [Path(folder) / f for f in RESULT_FILES]
    if not all(p.is_file() for p in paths):
        return False
    try:
        for p in paths:
            verify_file(p)
    except IntegrityError as err:
        repair_warning(err, "recomputing the result")
        return False
    return True


def write_result(folder: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write a result: ``arrays`` (None values skipped) to ``result.npz``, then ``meta`` (JSON) to ``result.json``.

    Both writes are atomic; the JSON is written last, so :func:`has_result` sees a finished pair.
    """
    folder = Path(folder)
    write_arrays(folder / "result.npz", arrays)
    write_verified(folder / "result.json", json.dumps(meta).encode("utf-8"))


def read_result(folder: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(meta, arrays)`` written by :func:`write_result`."""
    folder = Path(folder)
    path = folder / "result.json"
    try:
        meta = json.loads(read_verified(path).decode("utf-8"))
    except IntegrityError as err:
        raise IntegrityError(path, f"{err.reason}; delete {folder} to recompute it") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise IntegrityError(path, f"not a result description ({err}); delete {folder} to recompute it") from None
    return meta, read_arrays(folder / "result.npz")


def write_arrays(path: str | os.PathLike, arrays: dict[str, Any]) -> None:
    """Atomically write named arrays (None values skipped) as a compressed ``.npz``."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items() if v is not None})
    write_verified(path, buf.getvalue())  # atomic, unique temporary name, SHA-256 beside it


def read_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` written by :func:`write_arrays` (loaded into memory), after verifying its checksum.

    Raises :class:`~lmkcore.data.integrity.IntegrityError` (a DataError naming the file and what to delete).
    """
    import zipfile

    path = Path(path)
    try:
        data = read_verified(path)
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except IntegrityError as err:
        raise IntegrityError(path, f"{err.reason}; delete it to recompute") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as err:
        raise IntegrityError(path, f"unreadable arrays ({err}); delete it to recompute") from None


# ------------------------------------------------------------------------------------------------
# trained networks and forward passes
# ------------------------------------------------------------------------------------------------

def load_trained(train_config, num_landmarks: int, checkpoint: str | os.PathLike, device: str = "cpu"):
    """The network (eval mode, on ``device``) and heatmap target module of a finished checkpoint.

    Builds both from ``train_config`` (:class:`~lmkcore.training.trainer.TrainConfig`) and loads
    their state dicts; no training code runs.

    Raises
    ------
    ConfigError
        When ``checkpoint`` is missing or belongs to another configuration.
    """
    from lmkcore.errors import ConfigError
    from lmkcore.training.trainer import build_network, build_target, load_checkpoint

    path = Path(checkpoint)
    if not path.is_file():
        raise ConfigError(f"{path}: no trained model; run the experiment first")
    state = load_checkpoint(path)
    if "config" in state and json.loads(state["config"]) != train_config.to_dict():
        raise ConfigError(f"{path}: checkpoint belongs to another configuration; delete it to retrain")
    model = build_network(train_config, num_landmarks)
    model.load_state_dict(state["model"])
    target = build_target(train_config, num_landmarks)
    if "target" in state:
        target.load_state_dict(state["target"])
    return model.to(device).eval(), target.to(device)


@dataclass
class ForwardBatch:
    """One batch of :func:`forward_batches`.

    Attributes
    ----------
    start : int
        Index of the batch's first item in the dataset.
    items : dict
        The collated dataset items (``image`` ``(B, 1, H, W)``, ``landmarks`` ``(B, N, 2)`` working px,
        ``spacing`` ``(B, 2)`` mm/working px, ``id``...), on the CPU.
    output : Any
        ``model(images)`` (whatever the model returns).
    mc_outputs : list
        ``mc_samples`` further outputs with dropout active (empty without MC dropout).
    """

    start: int
    items: dict
    output: Any
    mc_outputs: list


@torch.no_grad()
def forward_batches(model: torch.nn.Module, dataset, device: str = "cpu", batch_size: int = 8, *,
                    mc_samples: int = 0, pad_multiple: int = 1, **model_kwargs: Any) -> Iterator[ForwardBatch]:
    """Batched inference over a :class:`~lmkcore.data.loader.LandmarkImageDataset`, in dataset order.

    Images are zero-padded at the bottom/right to a multiple of ``pad_multiple`` px, go through
    :func:`~lmkcore.training.trainer.normalise_images` and are passed to ``model(images, **model_kwargs)``
    in eval mode; with ``mc_samples > 0`` the same batch is passed again that many times with dropout
    active (:func:`~lmkcore.models.common.enable_mc_dropout`; Monte-Carlo dropout).
    """
    import torch.nn.functional as F

    from lmkcore.data.loader import make_loader
    from lmkcore.models.common import enable_mc_dropout
    from lmkcore.training.trainer import normalise_images

    model.eval()
    start = 0
    for items in make_loader(dataset, batch_size, shuffle=False):
        images = items["image"].to(device)
        if pad_multiple > 1:  # zero grey value (-1 after normalising) below and right of the image
            h, w = images.shape[-2:]
            images = F.pad(images, (0, (-w) % pad_multiple, 0, (-h) % pad_multiple))
        images = normalise_images(images)
        output = model(images, **model_kwargs)
        mc: list = []
        if mc_samples:
            enable_mc_dropout(model)
            mc = [model(images, **model_kwargs) for _ in range(mc_samples)]
            model.eval()
        yield ForwardBatch(start, items, output, mc)
        start += len(items["image"])
