"""Streaming JSONL input with ``file:line`` errors, checked atomic output, progress, a compact group table."""

from __future__ import annotations

import codecs
import functools
import hashlib
import json
import math
import os
import stat
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from .._fields import short as _short


class DataError(ValueError):
    """Bad input: ``<file>:<line>: <what is wrong>``. ``line`` is 1-based (0: the file as a whole)."""

    def __init__(self, path: str, line: int, message: str):
        self.path, self.line, self.message = str(path), line, message
        super().__init__(f"{self.path}:{line}: {message}" if line else f"{self.path}: {message}")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON (use a finite number or null)")


#: ``repr``-like text of a JSON value for error messages, as written in the file (``null``, ``true``).
short = functools.partial(_short, as_json=True)


def read_jsonl(path: str | os.PathLike, progress: Progress | None = None) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, row)`` for each non-blank line of a JSONL file (``"-"``: stdin).

    One line is held in memory at a time. A UTF-8 byte-order mark at the start of the file (some
    editors write one) is skipped. Raises :class:`DataError` naming ``file:line`` for a line that
    is not UTF-8, not JSON (NaN and Infinity included), or not a JSON object.
    """
    name = "<stdin>" if str(path) == "-" else str(path)
    if str(path) == "-":
        stream, close = sys.stdin.buffer, False
    else:
        try:
            stream, close = open(path, "rb", buffering=1 << 20), True  # noqa: SIM115 (closed in finally)
        except OSError as exc:
            raise DataError(name, 0, f"cannot read: {exc.strerror}") from None
    try:
        for number, raw in enumerate(stream, 1):
            if progress is not None:
                progress.advance(len(raw))
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(name, number, f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
            if not text.strip():
                continue
            try:
                row = json.loads(text.rstrip("\r\n"), parse_constant=_reject_constant)
            except ValueError as exc:
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                where = f" at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
                if reason.endswith(" at") and where:  # "Unterminated string starting at" + " at column 13"
                    reason = reason[: -len(" at")]
                raise DataError(name, number, f"invalid JSON: {reason}{where}") from None
            if not isinstance(row, dict):
                raise DataError(name, number, f"a row must be a JSON object, got {type(row).__name__} {short(row)}")
            yield number, row
    finally:
        if close:
            stream.close()


def dumps(row: dict) -> str:
    """One JSONL line (no NaN: the readers here and the hosts' loaders reject it)."""
    return json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n"


_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _stat_of_input(path: str | os.PathLike) -> os.stat_result | None:
    try:
        return os.fstat(sys.stdin.fileno()) if str(path) == "-" else os.stat(path)
    except (OSError, ValueError, AttributeError):
        return None


#: A file or directory without any of these bits (``chmod a-w``) is read-only for everyone, root included.
_ANY_WRITE = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


def check_output(path: str | os.PathLike, *, inputs=(), in_place: bool = False) -> Path:
    """Check an output path before any input is read; return the file to write.

    The output must be a regular file or not exist yet. A symlink is followed: its target is
    the file written (replaced), and the link stays (as ``sed -i --follow-symlinks`` does). The
    same file as one of ``inputs`` (same inode: through a symlink, a hard link or another
    spelling of the path; ``"-"`` is stdin) is refused unless ``in_place``. A file or directory
    without write permission is refused, and so is one without any write bit (mode 444, 555)
    even for root, who could write it: ``chmod a-w`` means "do not replace this" for everyone.

    Raises:
        DataError: ``<path>: <reason>`` for a directory, a FIFO, a device or a socket, a file or
            directory without write permission, or the input itself without ``in_place``.
    """
    name = str(path)
    target = Path(os.path.realpath(path))
    try:
        st = os.stat(target)
    except (FileNotFoundError, NotADirectoryError):  # a new file (a file in the way of its directory: below)
        st = None
    except OSError as exc:  # a symlink loop, a file where a directory should be, no search permission
        raise DataError(name, 0, f"cannot write: {exc.strerror}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise DataError(name, 0, "is a directory; the output must be a file (-o DIR/NAME.jsonl)")
        if not stat.S_ISREG(st.st_mode):
            kind = next((k for test, k in _KINDS if test(st.st_mode)), "not a regular file")
            raise DataError(name, 0, f"is {kind}, not a regular file; the output must be a regular file or a new path")
        for src in inputs:
            src_st = _stat_of_input(src)
            if src_st is not None and os.path.samestat(st, src_st) and not in_place:
                raise DataError(
                    name,
                    0,
                    f"is the input file {'<stdin>' if str(src) == '-' else str(src)} (the same file); writing it "
                    "would replace the input: "
                    "choose another output, or pass --in-place to replace the input on success",
                )
        if not os.access(target, os.W_OK) or not st.st_mode & _ANY_WRITE:
            raise DataError(name, 0, "cannot write: Permission denied (the file is read-only)")
    existing = target.parent
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DataError(name, 0, f"cannot write: {str(existing)!r} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK) or not os.stat(existing).st_mode & _ANY_WRITE:
        raise DataError(name, 0, f"cannot write: Permission denied (in directory {str(existing)!r})")
    return target


def _remove(path: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[IO[str]]:
    """Open a temporary file beside ``path``; rename it to ``path`` only if the block succeeds.

    A crash, a bad row, Ctrl-C, SIGTERM or SIGHUP (the command line turns both into an
    exception) never leaves a half-written ``path``: an existing ``path`` is kept as it was, and
    the temporary file is removed (except after SIGKILL, which leaves a hidden
    ``.<name>.*.tmp`` and still never a half ``path``). A symlinked ``path`` is written through
    to its target; a replaced file keeps its permission bits. Check ``path`` first with
    :func:`check_output`.
    """
    shown = str(path)
    path = Path(os.path.realpath(path))
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            shown, 0, f"cannot write: cannot create directory {str(directory)!r} ({exc.strerror})"
        ) from None
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask  # mkstemp makes 0600; give the usual permissions of a new file
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise DataError(shown, 0, f"cannot write: {exc.strerror} (in directory {str(directory)!r})") from None
    handle = os.fdopen(fd, "w", encoding="utf-8", newline="\n", buffering=1 << 20)
    try:
        yield handle
    except BaseException:
        with suppress(OSError):
            handle.close()
        _remove(tmp)
        raise
    try:  # errors of the output itself (a full disk, a file system gone read-only)
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        with suppress(OSError):
            handle.close()
        _remove(tmp)
        if isinstance(exc, OSError):
            raise DataError(shown, 0, f"cannot write: {exc.strerror}") from None
        raise


def progress_mode(stream: IO[str]) -> str:
    """``"bar"`` on a terminal, ``"plain"`` lines when piped or redirected."""
    try:
        return "bar" if stream.isatty() else "plain"
    except (AttributeError, ValueError):
        return "plain"


class Progress:
    """A progress bar on a terminal (redrawn in place), plain lines when piped, or nothing.

    Plain lines come every ``RIFT_LOSSES_PROGRESS_SECONDS`` seconds (default 10), so a log file
    gets a few lines, not one per row.
    """

    def __init__(self, task: str, total_bytes: int | None, *, stream: IO[str] | None = None, mode: str = "auto"):
        self.stream = sys.stderr if stream is None else stream
        self.mode = progress_mode(self.stream) if mode == "auto" else mode
        if self.mode not in ("bar", "plain", "none"):
            raise ValueError(f"mode must be one of 'auto', 'bar', 'plain', 'none', got {mode!r}")
        self.task, self.total = task, total_bytes or None
        self.rows = self.bytes = 0
        self.start = self.last = time.monotonic()
        if self.mode == "bar":
            self.every = 0.1
        else:
            try:
                self.every = float(os.environ.get("RIFT_LOSSES_PROGRESS_SECONDS", "10"))
            except ValueError:
                self.every = 10.0
        self._drawn = False

    def advance(self, nbytes: int) -> None:
        self.rows += 1
        self.bytes += nbytes
        if self.mode == "none":
            return
        now = time.monotonic()
        if now - self.last >= self.every or (self.mode == "bar" and not self._drawn):
            self.last = now
            self._show(now)

    def _show(self, now: float, final: bool = False) -> None:
        rate = self.rows / max(now - self.start, 1e-9)
        frac = min(self.bytes / self.total, 1.0) if self.total else None
        if self.mode == "bar":
            done = f"{self.rows:,} lines {rate:,.0f} lines/s"
            if frac is not None:
                filled = int(round(30 * frac))
                done = f"[{'#' * filled}{'.' * (30 - filled)}] {100 * frac:3.0f}% " + done
            self.stream.write(f"\r{self.task} {done}\x1b[K" + ("\n" if final else ""))
        else:
            pct = f" ({100 * frac:.0f}%)" if frac is not None else ""
            self.stream.write(f"{self.task}: {self.rows:,} lines read{pct}, {rate:,.0f} lines/s\n")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Finish the bar at its final count (plain mode: the command's summary follows)."""
        if self.mode == "bar" and self._drawn:
            self._show(time.monotonic(), final=True)


def file_size(path: str | os.PathLike) -> int | None:
    try:
        return os.stat(path).st_size if str(path) != "-" else None
    except OSError:
        return None


def digest(key: str) -> int:
    """A 64-bit digest of a group key (collision odds about n^2 / 2^65: 3e-8 for a million groups)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little") or 1


class DigestTable:
    """A compact map from 64-bit digests to unsigned 64-bit values (open addressing, arrays).

    16 bytes a slot, at most half full: 16-32 bytes per distinct key, where a dict of ints costs
    about 100. Holds per-group state of ``stats`` and ``normalize`` in memory that grows with
    the number of groups, never with the number of rows.
    """

    def __init__(self, capacity: int = 1024):
        size = 1 << max(4, math.ceil(math.log2(max(capacity, 1) * 2)))
        self._keys = array("Q", bytes(8 * size))
        self._values = array("Q", bytes(8 * size))
        self._mask = size - 1
        self.count = 0

    def _slot(self, key: int) -> int:
        i = key & self._mask
        keys, mask = self._keys, self._mask
        while keys[i] and keys[i] != key:
            i = (i + 1) & mask
        return i

    def get(self, key: int, default: int | None = None) -> int | None:
        i = self._slot(key)
        return self._values[i] if self._keys[i] else default

    def __setitem__(self, key: int, value: int) -> None:
        i = self._slot(key)
        if not self._keys[i]:
            if 2 * (self.count + 1) > len(self._keys):
                self._grow()
                i = self._slot(key)
            self._keys[i] = key
            self.count += 1
        self._values[i] = value

    def _grow(self) -> None:
        keys, values = self._keys, self._values
        size = 2 * len(keys)
        self._keys, self._values, self._mask = array("Q", bytes(8 * size)), array("Q", bytes(8 * size)), size - 1
        for k, v in zip(keys, values):
            if k:
                i = self._slot(k)
                self._keys[i], self._values[i] = k, v

    def values(self) -> Iterator[int]:
        return (v for k, v in zip(self._keys, self._values) if k)

    def __len__(self) -> int:
        return self.count
