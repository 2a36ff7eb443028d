"""Loader of the built-in synthetic dataset (``load_dataset("synthetic")``)."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from lmkcore.errors import ConfigError
from lmkcore.data.records import LandmarkDataset
from lmkcore.synthetic.generator import SyntheticConfig, load_synthetic, synthetic_dataset
from lmkcore.data.datasets import register


@register("synthetic")
def load(data_root: str | Path | None = None, *, width: int | None = None, n_images: int | None = None,
         seed: int = 0, cache_dir: str | Path | None = None, **kw) -> LandmarkDataset:
    """Load the synthetic dataset.

    Parameters
    ----------
    data_root : path, optional
        An already generated synthetic folder (see
        :func:`lmkcore.synthetic.generator.generate_synthetic`). If None, the dataset for
        the given options is generated on first use and cached.
    width, n_images, seed, **kw
        :class:`~lmkcore.synthetic.generator.SyntheticConfig` fields (defaults: the
        config's). With ``data_root`` any option given (other than the
        default ``seed=0``) must agree with the stored config, else
        :class:`~lmkcore.errors.ConfigError`.
    cache_dir : path, optional
        Cache folder (default ``$LMKCORE_CACHE`` or ``~/.cache/lmkcore``).
    """
    options = dict(kw, seed=seed)
    if width is not None:
        options["width"] = width
    if n_images is not None:
        options["n_images"] = n_images
    if data_root is None:
        return load_synthetic(synthetic_dataset(SyntheticConfig.from_dict(options), cache_dir))
    record = load_synthetic(data_root)
    stored = record.extras.get("config", {})
    SyntheticConfig.from_dict(options)  # validates option names and values
    # The default seed=0 is not a request; any other given option is.
    explicit = {k: v for k, v in options.items() if not (k == "seed" and v == 0)}
    defaults = asdict(SyntheticConfig())
    clash = [k for k, v in explicit.items() if stored.get(k, defaults.get(k)) != v]
    if clash:
        raise ConfigError(
            f"{data_root}: stored synthetic config differs from the requested "
            + ", ".join(f"{k}={explicit[k]!r} (stored {stored.get(k)!r})" for k in clash)
        )
    return record
