"""Text progress bars that read well in a terminal, a log, a notebook and an executed notebook.

``tqdm.auto`` picks a widget bar inside a Jupyter kernel; an executed notebook
(papermill) then stores only the widget's initial ``0%`` text. :func:`progress`
always uses tqdm's plain-text bar on ``sys.stdout``: updates are carriage-return
rewrites of one line (rendered in place by a terminal and by Jupyter; collapsed
to the final state when ``run_all.sh`` saves the executed notebook), and the
final state is always kept (``leave=True``) so every bar's outcome is visible
afterwards. ``run_all.sh`` reads these lines from the running kernel to show
live progress (iterations, loss, rate, ETA).

``$LMKCORE_PROGRESS_INTERVAL`` (seconds, default 1) sets the minimum time
between two updates.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Iterable

from tqdm.std import tqdm as _tqdm

#: Width of a bar line when the output is not a terminal (tqdm cannot measure it).
NCOLS = 100


def _interval() -> float:
    try:
        return max(float(os.environ.get("LMKCORE_PROGRESS_INTERVAL", "1")), 0.0)
    except ValueError:
        return 1.0


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str | None = None,
             unit: str = "it", initial: int = 0, disable: bool = False, leave: bool = True,
             **kwargs: Any) -> _tqdm:
    """A plain-text tqdm bar on ``sys.stdout`` whose final state stays visible.

    Parameters
    ----------
    iterable : iterable, optional
        What to iterate over (as ``tqdm(iterable)``); None for manual ``update()``.
    total : int, optional
        Number of steps (default ``len(iterable)``).
    desc : str, optional
        Label printed before the bar, e.g. ``"train scn/aniso"``.
    unit : str
        Unit of one step (``"it"``, ``"img"``...), shown in the rate.
    initial : int
        Steps already done (a resumed run).
    disable : bool
        No output at all.
    leave : bool
        Accepted for tqdm compatibility and ignored: the final state is always kept.
    **kwargs
        Passed to :class:`tqdm.std.tqdm` (e.g. ``postfix``).

    Returns
    -------
    tqdm.std.tqdm
        Use it as tqdm (``set_postfix(loss=...)``, ``update(n)``, ``close()``).
    """
    del leave
    stream = sys.stdout
    # A Jupyter kernel's stdout may report the terminal it was started from as a TTY, but it has no size:
    # a fixed width everywhere, ASCII blocks except on a real terminal.
    is_tty = bool(getattr(stream, "isatty", lambda: False)()) and "ipykernel" not in sys.modules
    kwargs.setdefault("mininterval", _interval())
    kwargs.setdefault("ncols", NCOLS)
    kwargs.setdefault("nrows", 200)  # a terminal of unknown height (a pseudo-terminal, a kernel) hides bars otherwise
    if not is_tty:
        kwargs.setdefault("ascii", True)
    return _tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=disable, leave=True,
                 file=stream, **kwargs)
