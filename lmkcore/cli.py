"""Execute the notebooks in order with papermill (the engine behind ``./run_all.sh``).

Usage: ``python -m lmkcore.cli [options]``; ``--help`` lists them.
Executed copies go to ``--output-dir`` (never over the sources); figures and
tables to ``--figures-dir``, which gets an ``INDEX.md``.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

from lmkcore.errors import ConfigError, LmkcoreError
from lmkcore.training.profiles import PROFILES

PROG = "run_all.sh"


def find_notebooks(notebooks_dir: Path) -> list[Path]:
    """The ``NN_name.ipynb`` notebooks of ``notebooks_dir``, in order."""
    return sorted(p for p in notebooks_dir.glob("[0-9][0-9]_*.ipynb") if p.is_file())


def select_notebooks(notebooks: list[Path], only: str | None) -> list[Path]:
    """Filter by ``--only 00,02`` (two-digit prefixes); unknown prefixes are an error."""
    if not only:
        return notebooks
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    by_prefix = {p.name[:2]: p for p in notebooks}
    bad = [w for w in wanted if w.zfill(2) not in by_prefix]
    if bad or not wanted:
        raise ConfigError(
            f"--only {only!r}: no notebook numbered {', '.join(bad) or '(empty)'}; "
            f"available: {', '.join(sorted(by_prefix))}"
        )
    return [by_prefix[w.zfill(2)] for w in sorted(set(w.zfill(2) for w in wanted))]


def _parameters_cell(path: Path) -> dict | None:
    """The cell tagged ``parameters`` of notebook ``path`` (None if it has none)."""
    nb = json.loads(path.read_text())
    return next((c for c in nb.get("cells", []) if "parameters" in c.get("metadata", {}).get("tags", [])), None)


def has_parameters_cell(path: Path) -> bool:
    return _parameters_cell(path) is not None


def parameter_names(path: Path) -> list[str]:
    """Names assigned in the notebook's ``parameters`` cell, in order."""
    cell = _parameters_cell(path)
    if cell is None:
        return []
    try:
        tree = ast.parse("".join(cell.get("source", [])))
    except SyntaxError as err:
        raise ConfigError(f"{path}: the parameters cell is not valid Python ({err.msg}, line {err.lineno})") from None
    return [t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)]


#: Parameters every notebook has; they are set by their own options, not by ``--param``.
COMMON_PARAMETERS = ("profile", "dataset", "data_root", "device", "seed", "figures_dir", "cache_dir")


def parse_extra_params(items: list[str], notebooks: list[Path]) -> dict[Path, dict]:
    """``--param NAME=VALUE`` items -> the extra parameters of each notebook that declares ``NAME``.

    ``VALUE`` is read as a Python literal (``3``, ``0.5``, ``None``, ``True``, ``'x'``) and
    otherwise kept as a string (so paths need no quotes).
    """
    declared = {nb: parameter_names(nb) for nb in notebooks}
    extra: dict[Path, dict] = {nb: {} for nb in notebooks}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise ConfigError(f"--param {item!r}: expected NAME=VALUE")
        if name in COMMON_PARAMETERS:
            raise ConfigError(f"--param {name}: use --{name.replace('_', '-')} instead")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        users = [nb for nb in notebooks if name in declared[nb]]
        if not users:
            known = sorted({n for names in declared.values() for n in names} - set(COMMON_PARAMETERS))
            raise ConfigError(f"--param {name}: no selected notebook has a parameter {name!r}; "
                              f"notebook-specific parameters: {', '.join(known) or '(none)'}")
        for nb in users:
            extra[nb][name] = value
    return extra


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Regenerate every figure and table of lmkcore.")
    p.add_argument("--profile", default="quick", help="smoke | quick (default) | paper")
    p.add_argument("--dataset", default="synthetic", help="synthetic (default), isbi2015, hand, folder")
    p.add_argument("--data-root", default=None, help="folder holding your copy of the dataset")
    p.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 00,02")
    p.add_argument("--device", default="auto", help="auto (GPU if present, default) | cpu | cuda | cuda:N")
    p.add_argument("--seed", default="0", help="experiment seed (integer, default 0)")
    p.add_argument("--notebooks-dir", default="notebooks", help="source notebooks (default notebooks/)")
    p.add_argument("--output-dir", default=None, help="executed notebooks (default outputs/<profile>-<dataset>/)")
    p.add_argument("--figures-dir", default="figures", help="figures and tables (default figures/)")
    p.add_argument("--cache-dir", default=None, help="data/result cache (default $LMKCORE_CACHE or ~/.cache/lmkcore)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="set a notebook-specific parameter (repeatable), e.g. published_dir=/data/pykale")
    p.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
    p.add_argument("--list", action="store_true", help="list the notebooks and exit")
    return p




def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # unknown options: argparse prints usage + one error line, exit 2
    try:
        return _run(args)
    except LmkcoreError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2


def _run(args) -> int:
    if args.profile not in PROFILES:
        raise ConfigError(f"unknown profile {args.profile!r}; choose one of: {', '.join(PROFILES)}")
    try:
        seed = int(args.seed)
    except ValueError:
        raise ConfigError(f"--seed must be an integer, got {args.seed!r}") from None
    from lmkcore.data.datasets import dataset_names
    from lmkcore.reporting.notebook import resolve_device

    if args.dataset not in dataset_names():
        raise ConfigError(f"unknown dataset {args.dataset!r}; choose one of: {', '.join(dataset_names())}")
    if args.data_root is not None and not Path(args.data_root).expanduser().exists():
        raise ConfigError(f"--data-root {args.data_root!r} does not exist")
    if args.dataset != "synthetic" and args.data_root is None:
        raise ConfigError(f"--dataset {args.dataset} needs --data-root (the folder holding your copy of it)")
    resolve_device(args.device)

    nb_dir = Path(args.notebooks_dir).resolve()
    notebooks = find_notebooks(nb_dir)
    if not notebooks:
        raise ConfigError(f"no NN_*.ipynb notebooks in {nb_dir}")
    notebooks = select_notebooks(notebooks, args.only)
    if args.list:
        for nb in notebooks:
            print(nb.name)
        return 0
    for nb in notebooks:
        if not has_parameters_cell(nb):
            raise ConfigError(f"{nb}: no cell tagged 'parameters' (papermill needs one)")
    extra = parse_extra_params(args.param, notebooks)

    out_dir = Path(args.output_dir or f"outputs/{args.profile}-{args.dataset}").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    figures_dir = Path(args.figures_dir).resolve()
    params = {
        "profile": args.profile,
        "dataset": args.dataset,
        "data_root": str(Path(args.data_root).expanduser().resolve()) if args.data_root else None,
        "device": args.device,
        "seed": seed,
        "figures_dir": str(figures_dir),
        "cache_dir": str(Path(args.cache_dir).expanduser().resolve()) if args.cache_dir else None,
    }
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    from lmkcore.reporting.figure_index import write_index

    print(f"{PROG}: profile={args.profile} dataset={args.dataset} device={args.device} seed={seed}")
    print(f"{PROG}: executed notebooks -> {out_dir}; figures -> {figures_dir}")
    total = time.perf_counter()
    for k, nb in enumerate(notebooks, 1):
        dst = out_dir / nb.name
        start = time.perf_counter()
        try:
            pm.execute_notebook(
                str(nb), str(dst), parameters={**params, **extra[nb]}, kernel_name=args.kernel,
                cwd=str(nb_dir), progress_bar=False, log_output=False,
            )
        except PapermillExecutionError as err:
            elapsed = time.perf_counter() - start
            print(f"[{k}/{len(notebooks)}] {nb.stem:<28s} FAILED after {elapsed:6.1f} s", flush=True)
            print(
                f"{PROG}: error: notebook {nb.name} failed in cell {err.cell_index} "
                f"(execution count {err.exec_count}): {err.ename}: {err.evalue}",
                file=sys.stderr,
            )
            print(f"{PROG}: the executed copy with the full traceback is {dst}", file=sys.stderr)
            write_index(figures_dir)
            return 1
        except Exception as err:  # kernel died, notebook unreadable...
            print(f"[{k}/{len(notebooks)}] {nb.stem:<28s} FAILED", flush=True)
            print(f"{PROG}: error: notebook {nb.name} could not be executed: {type(err).__name__}: {err}", file=sys.stderr)
            return 1
        print(f"[{k}/{len(notebooks)}] {nb.stem:<28s} ok  {time.perf_counter() - start:7.1f} s", flush=True)
    index = write_index(figures_dir)
    print(f"{PROG}: all {len(notebooks)} notebooks passed in {time.perf_counter() - total:.1f} s; index: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
