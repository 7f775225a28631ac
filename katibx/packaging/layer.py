"""A reproducible image layer: the same files give the same bytes, hence the same digest, wherever it is built."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Mapping

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class Layer:
    """A gzip-compressed tar (``blob``) with its digest and the digest of the uncompressed tar (``diff_id``)."""

    blob: bytes
    digest: str
    diff_id: str

    @property
    def size(self) -> int:
        return len(self.blob)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build_layer(files: Mapping[str, Path | bytes]) -> Layer:
    """A layer holding ``files`` (path in the image -> a file here, or the content itself) and their parent folders:
    entries sorted, times 0, owner root (numeric), modes 0644 (0755 for folders and executables), gzip without a
    name or a time."""
    folders: set[str] = set()
    for name in files:
        folders.update(str(parent) for parent in PurePosixPath(name).parents if str(parent) not in (".", "/"))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(folders | set(files)):
            info = tarfile.TarInfo(name.lstrip("/"))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if name in files:
                given = files[name]
                data = given if isinstance(given, bytes) else given.read_bytes()
                info.size = len(data)
                executable = not isinstance(given, bytes) and given.stat().st_mode & 0o111
                info.mode = 0o755 if executable else 0o644
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
    return layer_of_tar(raw.getvalue())


def layer_of_tar(uncompressed: bytes) -> Layer:
    """A tar as a layer, as it is (a root filesystem made by mmdebstrap, say): gzip without a name or a time."""
    compressed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=6) as stream:
        stream.write(uncompressed)
    blob = compressed.getvalue()
    return Layer(blob, sha256(blob), sha256(uncompressed))
