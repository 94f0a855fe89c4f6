"""Where a checkpoint lives: a local file, or an object in a store that pyarrow's filesystems
reach (``s3://bucket/key``, ``gs://...``, ``hdfs://...``; ``annealbench[s3]``).

Torch-free, so the study layer can name checkpoints without importing torch.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Location", "is_uri", "join"]


def is_uri(value: object) -> bool:
    """``s3://bucket/key`` and the like: a location reached through its protocol."""
    return isinstance(value, str) and "://" in value and not value.startswith("file://")


@dataclass(frozen=True)
class Location:
    """Where one checkpoint lives: a local file or an object (``s3://bucket/prefix/run.pt``).

    Writes are atomic either way: a local file is written beside its path, fsynced and
    renamed over it; an object is serialized whole in memory and published with one PUT,
    so a reader sees the previous checkpoint or the new one, never part of one.
    """

    target: str

    @classmethod
    def of(cls, value: str | os.PathLike[str] | Location) -> Location:
        if isinstance(value, Location):
            return value
        return cls(value if is_uri(value) else str(Path(value)))

    @property
    def remote(self) -> bool:
        return is_uri(self.target)

    def _fs(self) -> tuple[Any, str]:
        """pyarrow's filesystem for the URI; S3 honours ``AWS_ENDPOINT_URL`` and the usual
        credentials (environment, profile, instance role)."""
        import pyarrow.fs

        return pyarrow.fs.FileSystem.from_uri(self.target)

    def exists(self) -> bool:
        if not self.remote:
            return Path(self.target).exists()
        import pyarrow.fs

        fs, path = self._fs()
        return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound

    def read_bytes(self) -> bytes:
        if not self.remote:
            return Path(self.target).read_bytes()
        fs, path = self._fs()
        with fs.open_input_stream(path) as stream:
            return bytes(stream.read())

    def write_atomic(self, blob: bytes) -> None:
        if self.remote:  # the object appears when the stream closes (one PUT, or a completed
            fs, path = self._fs()  # multipart upload): readers never see part of it
            with fs.open_output_stream(path) as stream:
                stream.write(blob)
            return
        path = Path(self.target)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def remove(self) -> None:
        """Delete the checkpoint, and any temporary file a killed writer left beside it."""
        if self.remote:
            if self.exists():
                fs, path = self._fs()
                fs.delete_file(path)
            return
        path = Path(self.target)
        path.unlink(missing_ok=True)
        for leftover in path.parent.glob(f".{path.name}.*.tmp"):
            leftover.unlink(missing_ok=True)

    def __str__(self) -> str:
        return self.target


def join(folder: str | os.PathLike[str], name: str) -> Location:
    """The checkpoint ``name`` inside ``folder`` (a local folder or an object-store prefix)."""
    if is_uri(folder):
        return Location(f"{str(folder).rstrip('/')}/{name}")
    return Location(str(Path(folder) / name))
