"""Images pulled as a node pulls them: from a registry, unpacked into a runtime bundle the fake kubelet runs."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
from pathlib import Path


class RegistryPuller:
    """The fake kubelet's ``pull`` for images of the registries it is given (host:port): ``skopeo copy`` into an
    OCI layout, ``umoci unpack`` into a bundle, once per image. Other images are pulled in name only (None); one
    that a registry does not have raises LookupError with skopeo's reason (the container waits in ErrImagePull).
    Pods of one image share its root filesystem (a test's trials write into their own folders, not the image)."""

    def __init__(self, folder: Path, registries: tuple[str, ...]) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.registries = registries
        self.pulled: dict[str, Path] = {}
        self.refused: set[str] = set()
        """Repositories whose images the node may not pull (as without their pull secret)."""
        self._lock = threading.Lock()

    def __call__(self, image: str) -> Path | None:
        if image.partition("/")[0] not in self.registries:
            return None
        if image.partition("/")[2].partition("@")[0].partition(":")[0] in self.refused:
            raise LookupError(f'failed to pull and unpack image "{image}": 401 Unauthorized')
        with self._lock:
            if image not in self.pulled:
                self.pulled[image] = self._unpack(image)
            return self.pulled[image]

    def _unpack(self, image: str) -> Path:
        """The image's bundle (named after the image: a pull that failed half-way is started again afresh)."""
        key = hashlib.sha256(image.encode()).hexdigest()[:16]
        layout, bundle = f"{self.folder / 'layout'}:{key}", self.folder / f"bundle-{key}"
        shutil.rmtree(bundle, ignore_errors=True)
        copied = subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{image}", f"oci:{layout}"],
                                capture_output=True, text=True, timeout=300)
        if copied.returncode != 0:
            raise LookupError(f'failed to pull and unpack image "{image}": {copied.stderr.strip()[-300:]}')
        unpacked = subprocess.run(["umoci", "unpack", "--image", layout, str(bundle)], capture_output=True, text=True,
                                  timeout=300)
        if unpacked.returncode != 0:
            raise LookupError(f'failed to unpack image "{image}": {unpacked.stderr.strip()[-300:]}')
        return bundle
