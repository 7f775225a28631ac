"""A client of the distribution (registry v2) API: what an append build needs, and no more.

Manifests (an image index resolved to one platform), blobs (exists, download, cross-repository mount, upload in
chunks), and a manifest put last. Basic and bearer-token authentication, with credentials given or read from
``~/.docker/config.json``. Every failure is a :class:`RegistryError` of one line naming the registry and what failed.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import platform
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from katibx.packaging.layer import sha256

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
CHUNK = 16 << 20  # bytes per PATCH of a large blob upload
DOCKER_HUB = "registry-1.docker.io"
USERNAME_ENV, PASSWORD_ENV = "KATIBX_REGISTRY_USERNAME", "KATIBX_REGISTRY_PASSWORD"


class RegistryError(RuntimeError):
    """A registry that cannot be reached, refuses the credentials, or lacks what was asked for (one line)."""


@dataclass(frozen=True)
class ImageRef:
    """``[registry/]repository[:tag][@digest]``, as Docker reads it (no registry: Docker Hub, ``library/``)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        match = re.fullmatch(r"(?:(?P<host>[^/]+)/)?(?P<repo>[a-z0-9._/-]+?)(?::(?P<tag>[\w][\w.-]{0,127}))?"
                             r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?", text.strip())
        if not match:
            raise ValueError(f"{text!r} is not an image reference (registry/repository:tag or @sha256:...)")
        host, repo = match["host"], match["repo"]
        if host and not ("." in host or ":" in host or host == "localhost"):
            host, repo = None, f"{host}/{repo}"  # "user/repo": a Docker Hub repository
            if not re.fullmatch(r"[a-z0-9._/-]+", repo):
                raise ValueError(f"{text!r} is not an image reference (repository names are lower-case)")
        if not host or host in ("docker.io", "index.docker.io"):
            host = DOCKER_HUB
            repo = repo if "/" in repo else f"library/{repo}"
        return cls(host, repo, match["tag"], match["digest"])

    @property
    def reference(self) -> str:
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> ImageRef:
        return ImageRef(self.registry, self.repository, None, digest)

    def __str__(self) -> str:
        """The reference as Docker and Kubernetes write it (Docker Hub as ``docker.io``, which pull secrets name)."""
        host = "docker.io" if self.registry == DOCKER_HUB else self.registry
        return f"{host}/{self.repository}" + (f"@{self.digest}" if self.digest else f":{self.tag or 'latest'}")


def host_platform() -> str:
    """This machine's platform as images name it (``linux/amd64``, ``linux/arm64``)."""
    machine = platform.machine().lower()
    return "linux/" + {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def environment_credentials() -> tuple[str, str] | None:
    """The user and password in ``$KATIBX_REGISTRY_USERNAME`` and ``$KATIBX_REGISTRY_PASSWORD`` (both set), else
    None (then ``~/.docker/config.json`` answers)."""
    username, password = os.environ.get(USERNAME_ENV), os.environ.get(PASSWORD_ENV)
    return (username, password) if username and password else None


def docker_credentials(registry: str, config: Path | None = None) -> tuple[str, str] | None:
    """The user and password ``docker login`` stored for ``registry`` in ``~/.docker/config.json`` (or
    ``$DOCKER_CONFIG``), None when there are none."""
    path = config or Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"
    try:
        auths = json.loads(path.read_text()).get("auths", {})
    except (OSError, ValueError, AttributeError):
        return None
    for key in (registry, f"https://{registry}", f"http://{registry}",
                *(("https://index.docker.io/v1/",) if registry == DOCKER_HUB else ())):
        entry = auths.get(key) or {}
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise RegistryError(f"{path}: the auth of {key} is not base64 of user:password") from None
            return user, password
    return None


class _NoCredentialsElsewhere(urllib.request.HTTPRedirectHandler):
    """Redirects (a blob served by a storage host) without the registry's Authorization header: another host
    never sees the credentials (and a presigned URL refuses a second authentication)."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlparse(newurl).netloc != urllib.parse.urlparse(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_NoCredentialsElsewhere)


class Registry:
    """One registry host; ``insecure`` speaks plain HTTP, as to a registry on this machine (localhost and
    127.0.0.0/8 always, as Docker does)."""

    def __init__(self, host: str, *, insecure: bool = False, credentials: tuple[str, str] | None = None) -> None:
        self.host = host
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        insecure = insecure or name == "localhost" or name.startswith("127.")
        self.base = f"{'http' if insecure else 'https'}://{host}"
        self.credentials = credentials or docker_credentials(host)
        self._authorization: dict[str, str] = {}  # by scope (repository and actions)

    # requests -----------------------------------------------------------------------------------------------
    def _request(self, method: str, url: str, repository: str, *, data: bytes | None = None,
                 headers: dict[str, str] | None = None, ok: tuple[int, ...] = (200,)) -> tuple[int, Any, bytes]:
        url = url if url.startswith("http") else self.base + url
        headers = dict(headers or {})
        for attempt in range(2):
            authorization = self._authorization.get(repository)
            if authorization:
                headers["Authorization"] = authorization
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with _OPENER.open(request, timeout=60) as response:
                    return response.status, response.headers, response.read()
            except urllib.error.HTTPError as exc:
                body = exc.read()
                if exc.code == 401 and attempt == 0:
                    self._authorization[repository] = self._authorize(exc.headers.get("WWW-Authenticate", ""))
                    continue
                if exc.code in ok:
                    return exc.code, exc.headers, body
                raise RegistryError(self._refused(method, url, repository, exc.code, body)) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", None) or exc.__class__.__name__
                raise RegistryError(f"registry {self.host} cannot be reached: {reason}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _refused(self, method: str, url: str, repository: str, code: int, body: bytes) -> str:
        try:
            errors = json.loads(body).get("errors") or []
            detail = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}" for e in errors)
        except (ValueError, AttributeError):
            detail = ""
        what = urllib.parse.urlparse(url).path
        if code in (401, 403):
            return (f"registry {self.host}: the credentials were refused for {repository} (docker login "
                    f"{self.host}, or --username and --password)")
        return f"registry {self.host}: {method} {what}: HTTP {code}" + (f" ({detail})" if detail else "")

    def _authorize(self, challenge: str) -> str:
        """The Authorization header that answers a 401's challenge (Basic, or a Bearer token from its realm)."""
        scheme, _, params = challenge.partition(" ")
        if not self.credentials and scheme.lower() == "basic":
            raise RegistryError(f"registry {self.host} asks for credentials: docker login {self.host}, or --username")
        if scheme.lower() == "basic":
            return "Basic " + base64.b64encode(":".join(self.credentials or ("", "")).encode()).decode()
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        if scheme.lower() != "bearer" or "realm" not in fields:
            raise RegistryError(f"registry {self.host}: unsupported authentication challenge {challenge!r}")
        pairs = [("service", fields["service"])] if "service" in fields else []
        pairs += [("scope", scope) for scope in fields.get("scope", "").split()]  # one parameter per scope (spec)
        realm = fields["realm"]
        request = urllib.request.Request(f"{realm}{'&' if '?' in realm else '?'}{urllib.parse.urlencode(pairs)}")
        if self.credentials:
            request.add_header("Authorization", "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode())
        try:
            with _OPENER.open(request, timeout=60) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise RegistryError(f"registry {self.host}: the token service refused the credentials "
                                f"(HTTP {exc.code})") from None
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            raise RegistryError(f"registry {self.host}: its token service cannot be reached: {exc}") from None
        return "Bearer " + str(answer.get("token") or answer.get("access_token") or "")

    # manifests ----------------------------------------------------------------------------------------------
    def manifest(self, image: ImageRef, platform_name: str | None = None) -> tuple[dict[str, Any], str]:
        """The image's manifest and its digest; an index is resolved to ``platform_name`` (default: this
        machine's)."""
        accept = ", ".join(MANIFEST_TYPES + INDEX_TYPES)
        status, headers, body = self._request("GET", f"/v2/{image.repository}/manifests/{image.reference}",
                                              image.repository, headers={"Accept": accept}, ok=(200, 404))
        if status == 404:
            raise RegistryError(f"registry {self.host}: image {image} not found")
        try:
            document = json.loads(body)
            assert isinstance(document, dict)
        except (ValueError, AssertionError):
            raise RegistryError(f"registry {self.host}: the manifest of {image} is not JSON: is this a registry?") \
                from None
        if document.get("mediaType") in INDEX_TYPES or "manifests" in document:
            wanted = platform_name or host_platform()
            for entry in document.get("manifests", []):
                found = entry.get("platform", {})
                name = "/".join(p for p in (found.get("os"), found.get("architecture"), found.get("variant")) if p)
                if name == wanted or name.startswith(wanted + "/"):
                    return self.manifest(image.with_digest(entry["digest"]), wanted)
            have = sorted("/".join(filter(None, (e.get("platform", {}).get("os"), e.get("platform", {}).get(
                "architecture")))) for e in document.get("manifests", []))
            raise RegistryError(f"image {image} has no {wanted} image (it has: {', '.join(have) or 'none'})")
        return document, headers.get("Docker-Content-Digest") or sha256(body)

    def put_manifest(self, image: ImageRef, body: bytes, media_type: str) -> str:
        """Store a manifest under the image's tag; its digest."""
        _, headers, _ = self._request("PUT", f"/v2/{image.repository}/manifests/{image.reference}", image.repository,
                                      data=body, headers={"Content-Type": media_type}, ok=(201,))
        return headers.get("Docker-Content-Digest") or sha256(body)

    # blobs --------------------------------------------------------------------------------------------------
    def blob(self, repository: str, digest: str) -> bytes:
        _, _, body = self._request("GET", f"/v2/{repository}/blobs/{digest}", repository)
        if sha256(body) != digest:
            raise RegistryError(f"registry {self.host}: blob {digest} of {repository} arrived damaged")
        return body

    def has_blob(self, repository: str, digest: str) -> bool:
        status, _, _ = self._request("HEAD", f"/v2/{repository}/blobs/{digest}", repository, ok=(200, 404))
        return status == 200

    def mount(self, repository: str, digest: str, source: str) -> bool:
        """Link a blob of ``source`` (same registry) into ``repository`` without uploading it; False when the
        registry would not (then upload it)."""
        path = f"/v2/{repository}/blobs/uploads/?{urllib.parse.urlencode({'mount': digest, 'from': source})}"
        status, headers, _ = self._request("POST", path, repository, data=b"",
                                           ok=(201, 202, 401, 403))  # refused: not ours to mount
        if status == 202 and headers.get("Location"):  # not mounted: an upload was opened instead; leave it
            self._request("DELETE", self._location(headers, self.base + path), repository, ok=(204, 404, 405))
        return status == 201

    def upload(self, repository: str, data: bytes, digest: str) -> None:
        """Upload a blob: in one request, or in chunks when it is large."""
        start_url = f"{self.base}/v2/{repository}/blobs/uploads/"
        _, headers, _ = self._request("POST", start_url, repository, data=b"", ok=(202,))
        location = self._location(headers, start_url)
        for start in range(0, len(data), CHUNK) if len(data) > CHUNK else ():
            chunk = data[start:start + CHUNK]
            _, headers, _ = self._request("PATCH", location, repository, data=chunk, ok=(202,), headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{start}-{start + len(chunk) - 1}"})
            location = self._location(headers, location)
        rest = b"" if len(data) > CHUNK else data
        separator = "&" if "?" in location else "?"
        self._request("PUT", f"{location}{separator}digest={urllib.parse.quote(digest)}", repository, data=rest,
                      headers={"Content-Type": "application/octet-stream"}, ok=(201,))

    @staticmethod
    def _location(headers: Any, url: str) -> str:
        """Where an upload goes on: the Location header, relative to the request's URL if it is relative."""
        return urllib.parse.urljoin(url, headers.get("Location", ""))
