"""The append builder: a base image plus one layer of code, as an OCI image pushed to a registry or written as an
OCI layout folder. No Docker daemon, no root; the same input gives the same digest."""

from __future__ import annotations

import inspect
import json
import re
import sys
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Collection, Sequence

from katibx.packaging.layer import LAYER_MEDIA_TYPE, Layer, build_layer, layer_of_tar, sha256
from katibx.packaging.registry import ImageRef, Registry, RegistryError, host_platform
from katibx.packaging.requirements import PACKAGES_DIR, RequirementsError, requirement_files
from katibx.packaging.sources import DEFAULT_WORKDIR, Source, SourceError, read_source

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
SCRATCH = "scratch"  # no base image: the code layer alone
EPOCH = "1970-01-01T00:00:00Z"  # the image's "created": fixed, so that a rebuild of the same input is the same image


class BuildError(RuntimeError):
    """A build that cannot be made: a source, a base or a destination problem (one line)."""


@dataclass
class BuiltImage:
    """What a build made: the manifest's digest, where it went, and the files of its code layer."""

    digest: str
    files: dict[str, Path | bytes]
    pushed: str | None = None  # the reference pinned to the digest, when pushed
    layout: Path | None = None
    uploaded: list[str] = field(default_factory=list)  # the blobs that travelled (others were there or mounted)
    command: list[str] = field(default_factory=list)  # what the image runs: its Entrypoint + Cmd


@dataclass
class _Base:
    config: dict[str, Any]
    layers: list[dict[str, Any]]  # descriptors
    image: ImageRef | None
    registry: Registry | None


SourceLike = str | Path | Callable[..., Any]


def plan(source: SourceLike, workdir: str = DEFAULT_WORKDIR, *, exclude: Collection[Path] = (),
         metric: str = "objective") -> Source:
    """What the code layer will hold (path in the image -> a file here, or generated content) and the command that
    runs it: what ``--dry-run`` lists. ``source``: a file, a folder (without the files in ``exclude``), a notebook,
    ``file.py:function`` or a function (a number it returns is printed as ``metric``)."""
    if callable(source):
        module = inspect.getsourcefile(source)
        if module is None or source.__name__ != source.__qualname__ or not source.__name__.isidentifier():
            raise BuildError(f"source {source!r}: only a module-level function of a .py file can be packaged")
        source = f"{module}:{source.__name__}"
    try:
        read = read_source(source, workdir, metric, exclude)
    except SourceError as exc:
        raise BuildError(str(exc)) from None
    read.files = {str(PurePosixPath(workdir) / name): item for name, item in read.files.items()}
    return read


def build_image(source: SourceLike, base: str = SCRATCH, *, push: str | None = None,
                layout: str | Path | None = None, workdir: str = DEFAULT_WORKDIR, command: Sequence[str] | None = None,
                env: dict[str, str] | None = None, platform_name: str | None = None, insecure: bool = False,
                credentials: tuple[str, str] | None = None, rootfs: bool = False,
                requirements: str | Path | None = None, python_version: str | None = None,
                exclude: Collection[Path] = (), metric: str = "objective") -> BuiltImage:
    """Append ``source`` (see :func:`plan`; placed under ``workdir``) to ``base`` and push it to ``push`` and/or
    write it as an OCI layout at ``layout`` (``DIR`` or ``DIR:TAG``); BuildError (or RegistryError) naming what
    failed. ``exclude`` and ``metric``: as :func:`plan` takes them. With ``rootfs``, ``source`` is a tar of a root
    filesystem (mmdebstrap's), the layer as it is.

    ``requirements`` (default: a folder source's ``requirements.txt``) become a layer of pure-Python packages
    below the code, for the base's Python (``python_version``, default: the base's ``PYTHON_VERSION``, else this
    Python's), on the image's ``PYTHONPATH``."""
    if not push and not layout:
        raise BuildError("say where the image goes: --push REGISTRY/REPOSITORY[:TAG] or --oci-layout DIR")
    target = _image(push, "--push") if push else None
    if rootfs:
        read = Source({}, None, "rootfs")
        try:
            layer = layer_of_tar(Path(str(source)).read_bytes())
        except OSError as exc:
            raise BuildError(f"source {source}: {exc.strerror or exc}") from None
    else:
        read = plan(source, workdir, exclude=exclude, metric=metric)
        layer = build_layer(read.files)
    same_host = target is None or base == SCRATCH or _image(base, "--base").registry == target.registry
    base_image = _base(base, platform_name, insecure, credentials if same_host else None)  # given for the target only
    layers, env = [layer], dict(env or {})
    wanted = requirements or _folder_requirements(source, rootfs)
    if wanted:
        packages = _packages(Path(wanted), python_version or _python_of(base_image.config))
        layers.insert(0, build_layer(packages))  # below the code: a code-only rebuild uploads only the code
        read.files.update(packages)
        path = _env_of(base_image.config).get("PYTHONPATH")
        env.setdefault("PYTHONPATH", f"{PACKAGES_DIR}:{path}" if path else PACKAGES_DIR)
    name = source.__name__ if callable(source) else Path(str(source)).name
    config = _config(base_image.config, layers, workdir, command or read.command, env, name)
    config_blob = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    descriptors = [*base_image.layers, *({"mediaType": LAYER_MEDIA_TYPE, "digest": new.digest, "size": new.size}
                                         for new in layers)]
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                "config": {"mediaType": CONFIG_TYPE, "digest": sha256(config_blob), "size": len(config_blob)},
                "layers": descriptors,
                "annotations": {"org.opencontainers.image.created": EPOCH}}
    manifest_blob = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    runtime = config.get("config") or {}
    built = BuiltImage(sha256(manifest_blob), read.files,
                       command=list(runtime.get("Entrypoint") or []) + list(runtime.get("Cmd") or []))
    if target is not None:
        registry = Registry(target.registry, insecure=insecure, credentials=credentials)
        _push_blobs(registry, target, base_image, layers, config_blob, built)
        registry.put_manifest(target, manifest_blob, MANIFEST_TYPE)  # last: only a complete image is ever named
        built.pushed = str(target.with_digest(built.digest))
    if layout:
        try:
            built.layout = _write_layout(str(layout), base_image, layers, config_blob, manifest_blob)
        except OSError as exc:
            raise BuildError(f"--oci-layout {layout}: {exc.strerror or exc}") from None
    return built


def _image(text: str, flag: str) -> ImageRef:
    try:
        return ImageRef.parse(text)
    except ValueError as exc:
        raise BuildError(f"{flag}: {exc}") from None


def _base(base: str, platform_name: str | None, insecure: bool, credentials: tuple[str, str] | None) -> _Base:
    wanted = platform_name or host_platform()
    if base == SCRATCH:
        os_name, _, architecture = wanted.partition("/")
        return _Base({"architecture": architecture, "os": os_name, "config": {},
                      "rootfs": {"type": "layers", "diff_ids": []}, "history": []}, [], None, None)
    image = _image(base, "--base")
    registry = Registry(image.registry, insecure=insecure, credentials=credentials)
    manifest, _ = registry.manifest(image, wanted)
    config = json.loads(registry.blob(image.repository, manifest["config"]["digest"]))
    return _Base(config, list(manifest.get("layers", [])), image, registry)


def _folder_requirements(source: SourceLike, rootfs: bool) -> Path | None:
    folder = Path(str(source)) if not callable(source) and not rootfs else None
    found = folder / "requirements.txt" if folder is not None and folder.is_dir() else None
    return found if found is not None and found.is_file() else None


def _packages(requirements: Path, python_version: str) -> dict[str, Path | bytes]:
    if not requirements.is_file():
        raise BuildError(f"--requirements: {requirements}: no such file")
    try:
        return dict(requirement_files(requirements, python_version))
    except RequirementsError as exc:
        raise BuildError(str(exc)) from None


def _env_of(config: dict[str, Any]) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in (config.get("config") or {}).get("Env") or [])


def _python_of(config: dict[str, Any]) -> str:
    """The base image's Python version (X.Y) as its ``PYTHON_VERSION`` says (official python images), else
    this Python's."""
    found = re.match(r"(\d+\.\d+)", _env_of(config).get("PYTHON_VERSION", ""))
    return found[1] if found else f"{sys.version_info.major}.{sys.version_info.minor}"


def _config(base: dict[str, Any], layers: list[Layer], workdir: str, command: Sequence[str] | None,
            env: dict[str, str] | None, source: str) -> dict[str, Any]:
    """The base's config with the code layer added: working folder, command, environment and labels saying where
    it came from (``source``: its name); fixed times (so the same input is the same image)."""
    config = json.loads(json.dumps(base))
    config["created"] = EPOCH
    runtime = config.setdefault("config", {}) or {}
    config["config"] = runtime
    runtime["WorkingDir"] = workdir
    if command:
        runtime["Cmd"] = list(command)
        runtime.pop("Entrypoint", None)
    if env:
        kept = [e for e in runtime.get("Env") or [] if e.partition("=")[0] not in env]
        runtime["Env"] = kept + [f"{k}={v}" for k, v in env.items()]
    try:
        katibx_version = version("katibx")
    except PackageNotFoundError:
        katibx_version = "unknown"
    runtime["Labels"] = {**(runtime.get("Labels") or {}), "io.katibx.source": source,
                         "io.katibx.version": katibx_version}
    config.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"].extend(new.diff_id for new in layers)
    config.setdefault("history", []).extend({"created": EPOCH, "created_by": f"katibx build {source}"}
                                            for _ in layers)
    return config


def _push_blobs(registry: Registry, target: ImageRef, base: _Base, layers: list[Layer], config_blob: bytes,
                built: BuiltImage) -> None:
    """Every blob the manifest names, in the target repository: base layers mounted (same registry) or copied,
    the code layer and the config uploaded unless already there."""
    for descriptor in base.layers:
        digest = descriptor["digest"]
        if registry.has_blob(target.repository, digest):
            continue
        assert base.image is not None and base.registry is not None
        if base.image.registry == target.registry and registry.mount(target.repository, digest, base.image.repository):
            continue
        registry.upload(target.repository, base.registry.blob(base.image.repository, digest), digest)
        built.uploaded.append(digest)
    for blob, digest in (*((new.blob, new.digest) for new in layers), (config_blob, sha256(config_blob))):
        if not registry.has_blob(target.repository, digest):
            registry.upload(target.repository, blob, digest)
            built.uploaded.append(digest)


def _write_layout(where: str, base: _Base, layers: list[Layer], config_blob: bytes, manifest_blob: bytes) -> Path:
    """An OCI image layout folder (``DIR`` or ``DIR:TAG``; tag ``latest``) holding the image; its index last."""
    folder_text, _, tag = where.rpartition(":")
    if not folder_text or not re.fullmatch(r"[\w][\w.-]{0,127}", tag):  # a colon of the folder's own name
        folder_text, tag = where, "latest"
    folder = Path(folder_text)
    blobs = folder / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def keep(data: bytes) -> None:
        """A blob under its digest, written whole or not at all (a blob cut short is never taken as present)."""
        path = blobs / sha256(data).removeprefix("sha256:")
        if not path.exists():
            partial = path.with_suffix(".partial")
            partial.write_bytes(data)
            partial.replace(path)

    for descriptor in base.layers:
        if not (blobs / descriptor["digest"].removeprefix("sha256:")).exists():
            assert base.image is not None and base.registry is not None
            keep(base.registry.blob(base.image.repository, descriptor["digest"]))
    for data in (*(new.blob for new in layers), config_blob, manifest_blob):
        keep(data)
    (folder / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index_path = folder / "index.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {"schemaVersion": 2, "manifests": []}
    index["manifests"] = [m for m in index.get("manifests", [])
                          if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag]
    index["manifests"].append({"mediaType": MANIFEST_TYPE, "digest": sha256(manifest_blob), "size": len(manifest_blob),
                               "annotations": {"org.opencontainers.image.ref.name": tag}})
    index_path.write_text(json.dumps(index, indent=2))
    return folder


__all__ = ["BuildError", "BuiltImage", "RegistryError", "SCRATCH", "build_image", "plan"]
