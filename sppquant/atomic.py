"""Atomic file writes: a reader sees the old file or the new one, never half of either.

The temporary file lives in the target's folder (same filesystem, so ``os.replace`` is
atomic) and is removed on any exception, KeyboardInterrupt included. A SIGKILL cannot
be caught, so temp names carry the writer's process id (``.<name>.<pid>.<random>.tmp``):
the next write to the same path removes temp files whose process no longer exists
(a live writer's, even another process's, is never touched). An OS error while writing
(disk full, read-only, quota) is an `OutputError` naming the path: exit code 2.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from sppquant.errors import OutputError, UserError


def check_writable(path: str | os.PathLike[str], what: str = "output") -> Path:
    """Fail early (before any work, creating nothing) when ``path`` cannot be written."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{what} {p} is a directory, expected a file path")
    ancestor = p.parent if str(p.parent) else Path(".")
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent  # the folders in between are created at write time
    if not ancestor.is_dir():
        raise UserError(f"{what} {p} cannot be created: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"{what} {p} is not writable: no write permission on {ancestor}")
    if p.exists() and not os.access(p, os.W_OK):
        raise UserError(f"{what} {p} is not writable")
    return p


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(target: Path) -> list[Path]:
    """Temp files of earlier writes to ``target`` whose writer process is gone (killed mid-write)."""
    removed = []
    for tmp in target.parent.glob(f".{glob_escape(target.name)}.*.tmp"):
        pid = tmp.name[len(target.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO]:
    """Open a temp file beside ``path``; rename it over ``path`` only if the block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports 'w' and 'wb', got {mode!r}")
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        kwargs = {"encoding": "utf-8", "newline": "\n"} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, UserError):
            raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """A matplotlib figure as PNG, written atomically, and closed (reports make many)."""
    import io  # noqa: PLC0415

    import matplotlib.pyplot as plt  # noqa: PLC0415 - only plotting callers pay for matplotlib

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
