"""Execute the notebooks in order with papermill (the engine behind ``./run_all.sh`` and ``python -m lmkcore``).

Usage: ``python -m lmkcore [options]``; ``--help`` lists them. Executed copies
go to ``--output-dir`` (never over the sources); figures and tables to
``<figures-dir>/<profile>-<dataset>/`` (one folder per run, so runs never
overwrite each other), each with an ``INDEX.md``, and ``<figures-dir>/INDEX.md``
links every run folder. While a notebook runs, the running cell and the last
progress line of its output (training iterations, loss, rate, ETA) are shown in
place on a terminal, and as a line every ``--log-interval`` seconds otherwise;
``--verbose`` streams the notebook's whole output. ``--docs`` builds the API
reference from the docstrings with pdoc.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import sys
import threading
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
    otherwise kept as a string (so paths need no quotes); a string naming an existing file or folder
    (relative to the current folder) becomes its absolute path, e.g. ``encoder_weights=weights/r34.pth``.
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
        if isinstance(value, str) and ("/" in value or "." in Path(value).name) and Path(value).expanduser().exists():
            value = str(Path(value).expanduser().resolve())  # notebooks run in their folder: pass paths absolute
        users = [nb for nb in notebooks if name in declared[nb]]
        if not users:
            known = sorted({n for names in declared.values() for n in names} - set(COMMON_PARAMETERS))
            raise ConfigError(f"--param {name}: no selected notebook has a parameter {name!r}; "
                              f"notebook-specific parameters: {', '.join(known) or '(none)'}")
        for nb in users:
            extra[nb][name] = value
    return extra


def build_parser() -> argparse.ArgumentParser:
    """The options of ``run_all.sh`` / ``python -m lmkcore`` (README, "Options of ./run_all.sh")."""
    p = argparse.ArgumentParser(prog=PROG, description="Regenerate every figure and table of lmkcore.")
    p.add_argument("--profile", default="quick", help="smoke | quick (default) | paper")
    p.add_argument("--dataset", default="synthetic", help="synthetic (default), isbi2015, hand, folder")
    p.add_argument("--data-root", default=None, help="folder holding your copy of the dataset")
    p.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 00,02")
    p.add_argument("--device", default="auto", help="auto (GPU if present, default) | cpu | cuda | cuda:N")
    p.add_argument("--seed", default="0", help="experiment seed, 0 <= N < 2**32 (default 0)")
    p.add_argument("--notebooks-dir", default="notebooks", help="source notebooks (default notebooks/)")
    p.add_argument("--output-dir", default=None, help="executed notebooks (default outputs/<profile>-<dataset>/)")
    p.add_argument("--figures-dir", default="figures",
                   help="figures root (default figures/); this run writes to <root>/<profile>-<dataset>/")
    p.add_argument("--cache-dir", default=None, help="data/result cache (default $LMKCORE_CACHE or ~/.cache/lmkcore)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="set a notebook-specific parameter (repeatable), e.g. published_dir=/data/pykale")
    p.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
    p.add_argument("--verbose", action="store_true", help="stream each notebook's own output while it runs")
    p.add_argument("--log-interval", default="30", metavar="SECONDS",
                   help="when the output is not a terminal: one progress line per this many seconds (default 30)")
    p.add_argument("--list", action="store_true", help="list the notebooks and exit")
    p.add_argument("--docs", action="store_true", help="build the API reference (HTML, pdoc) into --docs-dir and exit")
    p.add_argument("--docs-dir", default="docs/api", help="where --docs writes the API reference (default docs/api/)")
    return p


#: Seeds must fit NumPy's legacy seeding (``np.random.seed``): ``0 <= seed < 2**32``.
SEED_LIMIT = 2**32


def parse_seed(raw: str) -> int:
    """``--seed`` as an int in ``[0, 2**32)``; otherwise a :class:`ConfigError` naming the allowed range."""
    try:
        seed = int(str(raw).strip())
    except ValueError:
        raise ConfigError(f"--seed must be an integer, got {raw!r}") from None
    if not 0 <= seed < SEED_LIMIT:
        raise ConfigError(f"--seed must be between 0 and 2**32 - 1 = {SEED_LIMIT - 1}, got {seed}")
    return seed


def ensure_writable(folder: Path, option: str) -> Path:
    """Create ``folder`` (and parents) and check a file can be written in it.

    Raises
    ------
    ConfigError
        ``"<option> <folder>: not writable (<reason>)"`` when it cannot be created
        or written, or is an existing file.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {folder}: exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".lmkcore-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"{option} {folder}: not writable ({err.strerror or err})") from None
    return folder


def read_skips(executed: Path) -> list[dict]:
    """The sections an executed notebook reported as skipped
    (:func:`lmkcore.reporting.notebook.report_skip`), in order: dicts with ``section``, ``reason``, ``hint``."""
    from lmkcore.reporting.notebook import SKIP_MIMETYPE

    try:
        nb = json.loads(Path(executed).read_text())
    except (OSError, json.JSONDecodeError):
        return []
    out = []
    for cell in nb.get("cells", []):
        for o in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            data = o.get("data", {}).get(SKIP_MIMETYPE)
            if isinstance(data, dict):
                out.append(data)
    return out


def skip_summary(skips: list[dict]) -> str:
    """``", 1 section skipped: real annotations not found; pass --param annotations_dir=..."`` ('' if none)."""
    if not skips:
        return ""
    n = len(skips)
    parts = []
    for s in skips:
        text = str(s.get("reason") or s.get("section") or "?")
        if s.get("hint"):
            text += f"; {s['hint']}"
        parts.append(text)
    return f", {n} section{'s' if n > 1 else ''} skipped: " + " | ".join(parts)


class LiveProgress:
    """Shows what a running notebook is doing: the running cell and the last line of its output.

    On a terminal the status line is rewritten in place (``\\r``) twice a second;
    otherwise one line is printed every ``interval`` seconds when something new
    happened. With ``verbose`` the notebook's output is copied through as it comes.
    Papermill calls :meth:`write` with the notebook's stdout/stderr text and
    :meth:`cell_started` (nbclient's ``on_cell_start`` hook) before each code cell.
    """

    def __init__(self, label: str, n_cells: int, out=None, interval: float = 30.0, verbose: bool = False,
                 tty: bool | None = None):
        self.out = out or sys.stdout
        self.label, self.n_cells, self.interval, self.verbose = label, n_cells, interval, verbose
        self.tty = bool(getattr(self.out, "isatty", lambda: False)()) if tty is None else tty
        self.cell = 0
        self.cell_text = ""
        self.last_line = ""
        self.start = time.perf_counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._shown = None
        self._width = shutil.get_terminal_size((100, 20)).columns
        self._thread = None

    # --- fed by papermill / nbclient
    def write(self, text: str) -> int:
        with self._lock:
            if self.verbose:
                self.out.write(text)
                self.out.flush()
            for piece in reversed(re.split(r"[\r\n]", text)):
                if piece.strip():
                    self.last_line = piece.strip()
                    break
        return len(text)

    def flush(self) -> None:
        pass

    def cell_started(self, cell=None, cell_index: int = 0, **_) -> None:
        with self._lock:
            self.cell = int(cell_index) + 1
            self.last_line = ""  # only the running cell's own output
            source = cell.get("source", "") if isinstance(cell, dict) else ""
            lines = [ln.strip() for ln in "".join(source).splitlines() if ln.strip()]
            self.cell_text = lines[0][:40] if lines else ""

    # --- display
    def status(self) -> str:
        """``"cell 5/23 [results = {m: ctx.experiment(record], 1m05s: train scn/aniso: 45%|####  | 360/800 [...]"``."""
        el = int(time.perf_counter() - self.start)
        clock = f"{el // 60}m{el % 60:02d}s" if el >= 60 else f"{el}s"
        if not self.cell:
            return f"starting the kernel, {clock}"
        text = f"cell {self.cell}/{self.n_cells} [{self.cell_text}], {clock}" if self.cell_text else \
            f"cell {self.cell}/{self.n_cells}, {clock}"
        return f"{text}: {self.last_line}" if self.last_line else text

    def _tick(self) -> None:
        with self._lock:
            if self.tty:
                line = f"    {self.status()}"[: self._width - 1]
                self.out.write("\r" + line + "\x1b[K")
                self.out.flush()
            else:
                key = (self.cell, self.last_line)
                if key != self._shown:
                    self.out.write(f"    [{self.label}] {self.status()}\n")
                    self.out.flush()
                    self._shown = key

    def _loop(self) -> None:
        period = 0.5 if self.tty else self.interval
        while not self._stop.wait(period):
            self._tick()

    def __enter__(self) -> "LiveProgress":
        if not self.verbose:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.tty and not self.verbose:
            with self._lock:
                self.out.write("\r\x1b[K")
                self.out.flush()


def kernel_manager_class():
    """The notebooks' kernel manager: jupyter_client's, except that it does not interrupt (SIGINT) a kernel
    it is shutting down. The notebook has finished by then, and the interrupt only made an idle ipykernel
    log "KeyboardInterrupt caught in kernel" on the terminal."""
    from jupyter_client.manager import AsyncKernelManager

    class QuietShutdownKernelManager(AsyncKernelManager):
        async def _async_interrupt_kernel(self) -> None:
            if getattr(self, "shutting_down", False):
                return
            await super()._async_interrupt_kernel()

    return QuietShutdownKernelManager


def kernel_config():
    """Kernel manager settings for the notebooks' kernels: talk over local IPC sockets rather than TCP
    (no open ports, and no "Kernel is running over TCP without encryption" warning). The sockets go to a
    fresh folder per kernel: the default ``kernel-ipc-N`` in the notebooks' folder made two concurrent runs
    pick the same socket names (one kernel then "didn't respond")."""
    import atexit
    import tempfile

    from traitlets.config import Config

    folder = tempfile.mkdtemp(prefix="lmkcore-kernel-")
    atexit.register(shutil.rmtree, folder, True)
    return Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(folder, "kernel-ipc")}})


def build_api_docs(out_dir: str | Path) -> tuple[Path, list[str]]:
    """Write the HTML API reference of ``lmkcore`` (from its NumPy docstrings, with pdoc) to ``out_dir``.

    Returns
    -------
    (Path, list of str)
        ``out_dir/index.html`` and the warnings pdoc raised (docstrings it could
        not parse, unresolved links...): an empty list means a clean build.
    """
    import warnings

    try:
        import pdoc
        import pdoc.render
    except ImportError:
        raise ConfigError("--docs needs pdoc: pip install -e '.[dev]' (or pip install pdoc)") from None
    out = Path(out_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.render.configure(docformat="numpy", show_source=False, search=True)
        import pkgutil

        import lmkcore

        # the package and each of its modules / subpackages by name (pdoc recurses into those): lmkcore's
        # __all__ (its public API) would otherwise hide them
        modules = ["lmkcore"] + sorted(m.name for m in pkgutil.iter_modules(lmkcore.__path__, "lmkcore.")
                                       if not m.name.endswith("__main__"))
        pdoc.pdoc(*modules, output_directory=out)
    pdoc_dir = str(Path(pdoc.__file__).parent)
    messages = [f"{w.category.__name__}: {w.message}" for w in caught if str(w.filename).startswith(pdoc_dir)]
    return out / "index.html", messages


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``run_all.sh`` and ``python -m lmkcore``; returns the exit code (0 ok, 1 failed, 2 bad options)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # unknown options: argparse prints usage + one error line, exit 2
    try:
        return _run(args)
    except LmkcoreError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2


def _run(args) -> int:
    if args.docs:
        index, problems = build_api_docs(args.docs_dir)
        for msg in problems:
            print(f"{PROG}: docs warning: {msg}", file=sys.stderr)
        print(f"{PROG}: API reference -> {index}" + (f" ({len(problems)} warnings)" if problems else ""))
        return 1 if problems else 0
    if args.profile not in PROFILES:
        raise ConfigError(f"unknown profile {args.profile!r}; choose one of: {', '.join(PROFILES)}")
    seed = parse_seed(args.seed)
    try:
        log_interval = float(args.log_interval)
    except ValueError:
        raise ConfigError(f"--log-interval must be a number of seconds, got {args.log_interval!r}") from None
    from lmkcore.data.datasets import dataset_names
    from lmkcore.reporting.figure_index import run_folder_name
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

    figures_root = ensure_writable(Path(args.figures_dir).expanduser().resolve(), "--figures-dir")
    references = {str(p["reference"]) for p in extra.values() if p.get("reference") not in (None, "", "None")}
    if len(references) > 1:  # pragma: no cover - one --param sets them all
        raise ConfigError(f"--param reference: one value per run, got {sorted(references)}")
    reference = next(iter(references), None)
    run_name = run_folder_name(args.profile, args.dataset, reference)
    out_dir = ensure_writable(Path(args.output_dir or f"outputs/{run_name}").resolve(), "--output-dir")
    run_dir = ensure_writable(figures_root / run_name, "--figures-dir")
    params = {
        "profile": args.profile,
        "dataset": args.dataset,
        "data_root": str(Path(args.data_root).expanduser().resolve()) if args.data_root else None,
        "device": args.device,
        "seed": seed,
        "figures_dir": str(figures_root),
        "cache_dir": str(Path(args.cache_dir).expanduser().resolve()) if args.cache_dir else None,
    }
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    from lmkcore.reporting.figure_index import write_index, write_root_index

    def finish_index() -> Path:
        write_index(run_dir)
        write_root_index(figures_root)
        from lmkcore.reporting.reproduction import write_reproduction  # figures/REPRODUCTION.md (all runs)
        write_reproduction(figures_root)
        return run_dir / "INDEX.md"

    print(f"{PROG}: profile={args.profile} dataset={args.dataset} device={args.device} seed={seed}")
    print(f"{PROG}: executed notebooks -> {out_dir}; figures -> {run_dir}", flush=True)
    total = time.perf_counter()
    n = len(notebooks)
    for k, nb in enumerate(notebooks, 1):
        dst = out_dir / nb.name
        n_cells = len(json.loads(nb.read_text()).get("cells", [])) + 1  # + papermill's injected-parameters cell
        print(f"[{k}/{n}] {nb.stem:<28s} starting", flush=True)
        start = time.perf_counter()
        live = LiveProgress(nb.stem, n_cells, interval=log_interval, verbose=args.verbose)
        try:
            with live:
                pm.execute_notebook(
                    str(nb), str(dst), parameters={**params, **extra[nb]}, kernel_name=args.kernel,
                    cwd=str(nb_dir), progress_bar=False, log_output=False, stdout_file=live, stderr_file=live,
                    on_cell_start=live.cell_started, coalesce_streams=True, config=kernel_config(),
                    kernel_manager_class=kernel_manager_class(),
                )
        except PapermillExecutionError as err:
            elapsed = time.perf_counter() - start
            print(f"[{k}/{n}] {nb.stem:<28s} FAILED after {elapsed:6.1f} s", flush=True)
            print(
                f"{PROG}: error: notebook {nb.name} failed in cell {err.cell_index} "
                f"(execution count {err.exec_count}): {err.ename}: {err.evalue}",
                file=sys.stderr,
            )
            print(f"{PROG}: the executed copy with the full traceback is {dst}", file=sys.stderr)
            finish_index()
            return 1
        except Exception as err:  # kernel died, notebook unreadable...
            print(f"[{k}/{n}] {nb.stem:<28s} FAILED", flush=True)
            print(f"{PROG}: error: notebook {nb.name} could not be executed: {type(err).__name__}: {err}", file=sys.stderr)
            return 1
        skipped = skip_summary(read_skips(dst))
        print(f"[{k}/{n}] {nb.stem:<28s} ok  {time.perf_counter() - start:7.1f} s{skipped}", flush=True)
    index = finish_index()
    print(f"{PROG}: all {n} notebooks passed in {time.perf_counter() - total:.1f} s; index: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
