"""Integrity of cached files: content checksums, collision-free atomic writes, per-key locks.

Threat model (see the README, "Cache integrity"): a cache folder may be shared
between users and processes, runs may be killed at any moment, and files in it
may be truncated, overwritten or replaced by other valid-looking files. Every
cached artefact is therefore written with a content checksum beside it and
trusted only after verification.

Primitives
----------
* :func:`sha256_file`, :func:`write_checksum`, :func:`verify_file`: a file
  ``X`` has its SHA-256 in ``X.sha256`` (one line ``<hex>  <name>``, the
  format of ``sha256sum``); a missing checksum, a mismatch or an unreadable
  file is an :class:`IntegrityError` naming the file. Verified files are
  remembered per process by ``(inode, size, mtime)`` so a file is hashed once.
* :func:`write_verified`, :func:`read_verified`: bytes with their checksum.
* :func:`temp_path`: a unique temporary name beside a target
  (``.<name>.<pid>-<random>.tmp`` / ``.partial``), so concurrent writers never
  share a temporary file.
* :func:`file_lock`: an exclusive per-key lock (``fcntl.flock`` on
  ``.<name>.lock`` beside the key); lock files are never deleted (deleting
  them would let two processes hold "the" lock at once).
* :func:`remove_stale_partials`: removes ``.<name>.*.partial`` folders and
  ``.<name>.*.tmp`` files whose key lock nobody holds (a killed writer's
  leftovers; a live writer holds the lock while its temporary exists).
* :func:`write_manifest`, :func:`verify_manifest`: checksums of every file of a
  folder (``MANIFEST.sha256``), for generated datasets.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import time
import threading
import uuid
import warnings
from pathlib import Path
from typing import Iterator

from lmkcore.data.formats import atomic_write_bytes
from lmkcore.errors import DataError

__all__ = [
    "IntegrityError", "CacheRepairWarning", "CHECKSUM_SUFFIX", "MANIFEST_NAME", "sha256_file", "sha256_bytes",
    "checksum_path", "write_checksum", "verify_file", "is_intact", "write_verified", "read_verified", "temp_path",
    "file_lock", "remove_stale_partials", "write_manifest", "verify_manifest", "repair_warning",
]

#: Suffix of the checksum file written beside every cached file.
CHECKSUM_SUFFIX = ".sha256"
#: Name of the checksum list of a generated folder.
MANIFEST_NAME = "MANIFEST.sha256"

_CHUNK = 1 << 20
# (lock file, thread id) held in this process (file_lock): no nested re-locking; stale partials of
# a key the calling thread holds may be cleaned
_HELD: set[tuple[str, int]] = set()


def _holds(lpath: Path) -> bool:
    return (str(lpath), threading.get_ident()) in _HELD
# path -> (st_ino, st_size, st_mtime_ns, digest) of files verified in this process
_VERIFIED: dict[str, tuple[int, int, int, str]] = {}


class IntegrityError(DataError):
    """A cached file is missing its checksum, does not match it, or cannot be read (names the file)."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class CacheRepairWarning(UserWarning):
    """A cached file failed verification and is being rebuilt."""


def repair_warning(err: Exception, what: str = "rebuilding it") -> None:
    """Warn (once per call) that a cache entry failed verification and is rebuilt."""
    warnings.warn(f"{err}; {what}", CacheRepairWarning, stacklevel=3)


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's content (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def checksum_path(path: str | os.PathLike) -> Path:
    """``path`` with :data:`CHECKSUM_SUFFIX` appended (``result.npz`` -> ``result.npz.sha256``)."""
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def temp_path(path: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """A unique temporary name beside ``path``: ``.<name>.<pid>-<random hex>.<suffix>``.

    Unique per process and call, so concurrent writers of the same target never
    collide; :func:`remove_stale_partials` recognises the pattern.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}{suffix}")


def write_checksum(path: str | os.PathLike, digest: str | None = None) -> str:
    """Write ``path``'s SHA-256 (``digest`` if given, else computed) to ``path.sha256`` atomically.

    Returns the digest.
    """
    path = Path(path)
    digest = digest or sha256_file(path)
    atomic_write_bytes(checksum_path(path), f"{digest}  {path.name}\n".encode())
    _remember(path, digest)
    return digest


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _remember(path: Path, digest: str) -> None:
    key = _stat_key(path)
    if key is not None:
        _VERIFIED[str(path.resolve())] = (*key, digest)


def _expected_digest(path: Path) -> str:
    cpath = checksum_path(path)
    try:
        text = cpath.read_text(encoding="ascii").split()
    except FileNotFoundError:
        raise IntegrityError(path, f"no checksum file {cpath.name} (written by an older version or an interrupted run)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise IntegrityError(path, f"unreadable checksum file {cpath.name} ({err})") from None
    if not text or len(text[0]) != 64 or any(c not in "0123456789abcdef" for c in text[0]):
        raise IntegrityError(path, f"malformed checksum file {cpath.name}")
    return text[0]


def verify_file(path: str | os.PathLike) -> str:
    """Check ``path`` against ``path.sha256``; return the digest.

    Raises
    ------
    IntegrityError
        If the file or its checksum is missing or unreadable, or the content
        does not match (naming the file).
    """
    path = Path(path)
    key = _stat_key(path)
    if key is None or not path.is_file():
        raise IntegrityError(path, "file not found")
    expected = _expected_digest(path)
    known = _VERIFIED.get(str(path.resolve()))
    if known is not None and known[:3] == key and known[3] == expected:
        return expected
    try:
        actual = sha256_file(path)
    except OSError as err:
        raise IntegrityError(path, f"unreadable ({err})") from None
    if actual != expected:
        if not _holds(lock_path(path)) and os.access(path.parent, os.W_OK):
            with file_lock(path):  # a writer may have been between the file and its checksum: look again
                expected, actual = _expected_digest(path), sha256_file(path)
        if actual != expected:
            raise IntegrityError(path, f"content does not match its checksum {checksum_path(path).name} "
                                       f"(truncated, overwritten or replaced)")
    _remember(path, actual)
    return actual


def is_intact(path: str | os.PathLike) -> bool:
    """True when :func:`verify_file` passes."""
    try:
        verify_file(path)
    except IntegrityError:
        return False
    return True


def write_verified(path: str | os.PathLike, data: bytes) -> str:
    """Write ``data`` atomically (unique temporary name + rename), then its checksum. Returns the digest.

    Both are written under the key's :func:`file_lock`, so concurrent writers of
    one path leave a file and checksum from the same writer.
    """
    path = Path(path)
    digest = sha256_bytes(data)
    with file_lock(path):
        atomic_write_bytes(path, data)
        return write_checksum(path, digest)


def _read_checked(path: Path) -> bytes:
    if not path.is_file():
        raise IntegrityError(path, "file not found")
    expected = _expected_digest(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise IntegrityError(path, f"unreadable ({err})") from None
    if sha256_bytes(data) != expected:
        raise IntegrityError(path, f"content does not match its checksum {checksum_path(path).name} "
                                   f"(truncated, overwritten or replaced)")
    return data


def read_verified(path: str | os.PathLike) -> bytes:
    """The bytes of ``path`` after checking them against ``path.sha256`` (:class:`IntegrityError` if not).

    A mismatch is checked once more under the key's lock (a writer may have
    been between the file and its checksum) before it is reported.
    """
    path = Path(path)
    try:
        return _read_checked(path)
    except IntegrityError:
        if _holds(lock_path(path)) or not os.access(path.parent, os.W_OK):
            raise
    with file_lock(path):
        return _read_checked(path)


def lock_path(key: str | os.PathLike) -> Path:
    """The lock file of a key path: ``.<name>.lock`` beside it."""
    key = Path(key)
    return key.with_name(f".{key.name}.lock")


@contextlib.contextmanager
def file_lock(key: str | os.PathLike, timeout: float | None = None, poll: float = 0.2) -> Iterator[Path]:
    """Hold an exclusive lock on the cache key ``key`` (a file or folder path that may not exist yet).

    Processes locking the same key run one after the other (a second caller
    waits, then typically finds the work done). ``timeout`` (s, default: wait
    forever) raises a :class:`DataError` naming the lock file. Re-entrant
    within one thread (a nested call for a key the thread holds does nothing).
    """
    lpath = lock_path(key)
    if _holds(lpath):
        yield lpath
        return
    lpath.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lpath, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        start = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if timeout is not None else 0))
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                if time.monotonic() - start > timeout:
                    raise DataError(f"{lpath}: still locked by another run after {timeout:.0f} s") from None
                time.sleep(poll)
        _HELD.add((str(lpath), threading.get_ident()))
        try:
            yield lpath
        finally:
            _HELD.discard((str(lpath), threading.get_ident()))
    finally:
        os.close(fd)  # closing releases the lock


def _try_lock(key: Path) -> int | None:
    lpath = lock_path(key)
    if _holds(lpath):  # the calling thread holds the key (it is the only writer)
        return os.open(os.devnull, os.O_RDONLY)
    try:
        fd = os.open(lpath, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def remove_stale_partials(folder: str | os.PathLike, pattern: str = "*") -> list[Path]:
    """Remove leftovers of killed writers in ``folder``: ``.<key>.*.partial`` and ``.<key>.*.tmp``.

    A leftover is removed only when the lock of its key (``<key>`` = the name
    between the leading dot and the last two dot-separated parts) can be taken
    at once or is held by the calling process (inside :func:`file_lock`), i.e.
    no other live process is writing that key. ``pattern`` restricts
    the keys (glob on ``<key>``). Returns the removed paths.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for leftover in sorted(folder.glob(f".{pattern}.*.partial")) + sorted(folder.glob(f".{pattern}.*.tmp")):
        parts = leftover.name[1:].split(".")
        if len(parts) < 3:
            continue
        key = folder / ".".join(parts[:-2])
        fd = _try_lock(key)
        if fd is None:
            continue
        try:
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
            removed.append(leftover)
        finally:
            os.close(fd)
    return removed


def write_manifest(folder: str | os.PathLike) -> Path:
    """Write ``folder/MANIFEST.sha256``: the SHA-256 of every file below ``folder`` (sorted relative paths)."""
    folder = Path(folder)
    lines = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST_NAME:
            lines.append(f"{sha256_file(p)}  {p.relative_to(folder).as_posix()}\n")
    out = folder / MANIFEST_NAME
    atomic_write_bytes(out, "".join(lines).encode())
    return out


def verify_manifest(folder: str | os.PathLike) -> None:
    """Check every file listed in ``folder/MANIFEST.sha256`` (:class:`IntegrityError` naming the first bad file)."""
    folder = Path(folder)
    manifest = folder / MANIFEST_NAME
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise IntegrityError(manifest, "not found (folder written by an older version or an interrupted run)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise IntegrityError(manifest, f"unreadable ({err})") from None
    if not lines:
        raise IntegrityError(manifest, "empty")
    for line in lines:
        digest, _, rel = line.partition("  ")
        if len(digest) != 64 or not rel:
            raise IntegrityError(manifest, f"malformed line {line[:80]!r}")
        path = folder / rel
        key = _stat_key(path)
        if key is None:
            raise IntegrityError(path, "listed in the manifest but missing")
        known = _VERIFIED.get(str(path.resolve()))
        if known is not None and known[:3] == key and known[3] == digest:
            continue
        try:
            actual = sha256_file(path)
        except OSError as err:
            raise IntegrityError(path, f"unreadable ({err})") from None
        if actual != digest:
            raise IntegrityError(path, f"content does not match {manifest.name} (truncated, overwritten or replaced)")
        _remember(path, actual)
