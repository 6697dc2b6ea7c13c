"""Files the engine and the apps write: atomically, checksummed, never over an input.

- :func:`atomic_path` yields a temporary name beside the final one (same suffixes, so libraries
  that pick a format from the name still work) and renames it into place only when the block
  finishes; a failure removes it. No reader ever sees a truncated file under the final name.
- :func:`check_output` is the policy for a user's ``--out``: an existing file is refused unless
  ``overwrite``, the input itself never, and missing parent folders are created.
- :func:`write_sidecar` / :func:`verify_sidecar`: a ``<file>.json`` beside a weights file with its
  SHA-256 and size, checked before the file is loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from ssmkit.errors import OutputError, UserError

SIDECAR_FORMAT = 1


class ChecksumError(UserError):
    """A file whose bytes no longer match the checksum written beside it."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fsync_path(path: str | Path) -> None:
    """Flush a file (or a folder's entry table) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_name(p: Path) -> Path:
    # Keep every suffix (.nii.gz, .png, .mp4): image, video and NIfTI writers choose the format
    # from the name. The random part keeps two writers of one file in one process apart.
    suffixes = "".join(p.suffixes)
    stem = p.name[: len(p.name) - len(suffixes)] if suffixes else p.name
    return p.with_name(f".{stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffixes}")


@contextlib.contextmanager
def atomic_path(path: str | Path, fsync: bool = True) -> Iterator[Path]:
    """Write to the yielded temporary path; on success it replaces ``path``, on error it is removed.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "out.txt") as tmp:
    ...     _ = tmp.write_text("done")
    >>> (d / "out.txt").read_text()
    'done'
    """
    final = Path(path)
    tmp = _temp_name(final)
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"nothing was written to {str(final)!r}")
        if fsync and tmp.is_file():
            fsync_path(tmp)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(out: str | Path, inputs: Iterable[str | Path] = (), overwrite: bool = False,
                 is_dir: bool = False) -> Path:
    """The user's ``--out`` path, checked: never an input, never an existing file without
    ``overwrite``, parent folders created. For ``is_dir``, the folder is created; an existing
    non-empty folder needs ``overwrite`` (files in it are then replaced one by one), and it may
    not be or lie inside an input folder."""
    p = Path(out).expanduser()
    resolved = p.resolve()
    for src in inputs:
        s = Path(src).expanduser()
        if _same(p, s) or resolved == s.resolve():
            raise OutputError(f"--out {str(p)!r} is the input {str(s)!r}; write the output somewhere else")
        if is_dir and s.is_dir() and (resolved == s.resolve() or s.resolve() in resolved.parents):
            raise OutputError(f"--out {str(p)!r} lies inside the input folder {str(s)!r}; choose another folder")
    if is_dir:
        if p.exists() and not p.is_dir():
            raise OutputError(f"--out {str(p)!r} is a file; expected a folder")
        if p.is_dir() and any(p.iterdir()) and not overwrite:
            raise OutputError(f"--out {str(p)!r} is a folder that already holds files; pass --overwrite to "
                              "replace them, or choose an empty folder")
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"cannot create the output folder {str(p)!r}: {err.strerror or err}") from None
        return p
    if p.is_dir():
        raise OutputError(f"--out {str(p)!r} is a folder; expected a file name")
    if p.exists() and not overwrite:
        raise OutputError(f"--out {str(p)!r} already exists; pass --overwrite to replace it")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the folder {str(p.parent)!r} for --out: {err.strerror or err}") from None
    return p


# ---------------------------------------------------------------------------- checksums


def sidecar_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".json")


def write_sidecar(path: str | Path) -> Path:
    """Write ``<path>.json`` with the SHA-256 and size of ``path`` (atomically)."""
    p = Path(path)
    meta = {"format": SIDECAR_FORMAT, "file": p.name, "sha256": sha256_file(p), "bytes": p.stat().st_size}
    side = sidecar_path(p)
    atomic_write_text(side, json.dumps(meta, indent=1) + "\n")
    return side


def verify_sidecar(path: str | Path, required: bool = False) -> bool:
    """Check ``path`` against its ``<path>.json``; True when verified, False when there is none
    (and not ``required``). A mismatch raises :class:`ChecksumError`."""
    p = Path(path)
    side = sidecar_path(p)
    if not side.is_file():
        if required:
            raise ChecksumError(f"{str(p)!r} has no checksum file {side.name!r}")
        return False
    try:
        meta = json.loads(side.read_text())
        want_sha, want_bytes = str(meta["sha256"]), int(meta["bytes"])
    except (ValueError, KeyError, TypeError) as err:
        raise ChecksumError(f"{str(side)!r} is not a valid checksum file ({err})") from None
    size = p.stat().st_size
    if size != want_bytes:
        raise ChecksumError(f"{str(p)!r} is {size} bytes, but {side.name} records {want_bytes} (truncated or replaced)")
    if sha256_file(p) != want_sha:
        raise ChecksumError(f"{str(p)!r} fails its SHA-256 check against {side.name} (corrupt)")
    return True


__all__ = [
    "ChecksumError", "atomic_path", "atomic_write_bytes", "atomic_write_text", "check_output", "fsync_path",
    "sha256_file", "sidecar_path", "verify_sidecar", "write_sidecar",
]
