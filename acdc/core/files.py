"""Writing output files so that a failure never leaves half a file, and says why in one line.

Every output (circuit.json, drawings, run.yaml, evaluation results) is written to a temporary
file in the same directory and renamed over the target only once complete, so a full disk,
a crash or Ctrl-C leaves either the old file or the new one, never a truncated one. OS errors
become one `AcdcError` line naming the file and the cause (a full disk above all).

>>> import tempfile, pathlib
>>> target = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
>>> write_text_atomic(target, "done").read_text()
'done'
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from acdc.errors import AcdcError, GraphError

CAUSES = {
    errno.ENOSPC: "no space left on the device; free some space and run the command again",
    errno.EDQUOT: "the disk quota is exceeded; free some space and run the command again",
    errno.EROFS: "the file system is read-only; choose another output directory",
    errno.EACCES: "permission denied; choose a directory you can write to",
    errno.ELOOP: "too many levels of symbolic links (a symlink loop)",
}


def read_text(path: Path, what: str) -> str:
    """A UTF-8 text file's contents, or one `GraphError` line: missing, not text (`what` says
    what the file should be), unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GraphError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise GraphError(f"{path}: not a text file; {what}") from None
    except OSError as error:
        raise GraphError(f"{path}: cannot read ({error.strerror or error})") from None


def disk_error(path: Path | str, error: OSError, doing: str = "cannot write") -> AcdcError:
    """One line for an OS error on `path`."""
    cause = CAUSES.get(error.errno or 0, error.strerror or str(error))
    return AcdcError(f"{path}: {doing} ({cause})")


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path beside `path`; renamed to `path` when the block succeeds, removed
    when it fails. OS errors become one-line `AcdcError`s."""
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with contextlib.suppress(OSError):  # mkstemp's 0600 would hide outputs from others
            os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
    except OSError as error:
        raise disk_error(path, error) from None
    temporary = Path(name)
    try:
        yield temporary
        os.replace(temporary, path)
    except OSError as error:
        raise disk_error(path, error) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
    return Path(path)
