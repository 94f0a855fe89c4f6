"""File helpers shared by the dataset families: atomic unpacking and downloading, and the quick
checks that name a missing, truncated or corrupt file instead of a reader's traceback.

Everything is written under a temporary name first and renamed into place, so a failure never
leaves a half-written file where a reader would take it for a whole one.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from annealbench.errors import DataError


def gunzip_atomic(source: Path, target: Path) -> None:
    """Unpack a .gz into ``target`` via a temporary file, so a failure leaves nothing behind."""
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, gzip.open(source, "rb") as packed:
            shutil.copyfileobj(packed, out, length=1 << 20)
        os.replace(temp_name, target)
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        Path(temp_name).unlink(missing_ok=True)
        raise DataError(
            f"could not unpack {source} into {target}: {type(error).__name__}: {error}; the "
            f"packaged file looks truncated or corrupt (reinstall its package)"
        ) from error
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def download_staged(
    root: Path, folder: str, names: Iterable[str], fetch: Callable[[Path], None]
) -> None:
    """``fetch(staging)`` into a temporary folder under ``root``, then move each of ``names``
    from ``staging/folder`` to ``root/folder``: the data root only ever holds whole files."""
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".download-"))
    try:
        fetch(staging)
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            os.replace(staging / folder / name, root / folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def idx_problem(path: Path) -> str | None:
    """Check an IDX file's header (uint8 data, 1 or 3 dimensions) against its size."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        header = handle.read(16)
    if len(header) < 8 or header[:3] != b"\x00\x00\x08" or header[3] not in (1, 3):
        return "not an IDX file of bytes (bad header); is it still gzip-compressed?"
    ndim = header[3]
    if len(header) < 4 + 4 * ndim:
        return f"truncated ({size} bytes, shorter than its header)"
    dims = [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if size != expected:
        what = "truncated" if size < expected else "corrupt"
        return f"{what} ({size} bytes; its header {dims} says {expected})"
    return None


def parse_problem(parse: Callable[[], Any], expected_keys: Iterable[str], what: str) -> str | None:
    """Whether ``parse()`` gives a dict with ``expected_keys``: a short description of what is
    wrong (``what`` names the expected kind of file), or None if it parses fine."""
    try:
        content = parse()
    except Exception as error:
        return f"truncated or corrupt ({type(error).__name__}: {error})"
    if not isinstance(content, dict) or any(key not in content for key in expected_keys):
        return f"not {what} (unexpected content)"
    return None
