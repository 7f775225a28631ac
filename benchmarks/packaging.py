"""``python -m benchmarks.packaging``: what ``katibx build`` costs against a registry on 127.0.0.1.

Needs Debian's ``docker-registry`` (and a Debian root filesystem with python3: ``--rootfs TAR``, default the tests'
cache ``~/.cache/katibx-tests/python-bookworm.tar``, made with mmdebstrap when missing). ``--repeat`` times, each
against a fresh registry: the Python base pushed from the tar (the first push: every byte travels); a code folder
built onto it (the base's layer mounted, not uploaded); the same folder rebuilt after one file changed (only the
code layer and the config travel); and that rebuild through the ``katibx build`` command (its start included).
Seconds (medians) and the blobs each upload sent. Writes ``benchmarks/results/packaging.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.common import REPO, write_results
from katibx.packaging.build import build_image

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "katibx-tests" / "python-bookworm.tar"


def _rootfs(path: Path) -> Path:
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mmdebstrap", "--variant=essential", "--include=python3", "--format=tar", "bookworm",
                        str(path)], check=True, capture_output=True, timeout=900)
    return path


def _registry(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        host = f"127.0.0.1:{sock.getsockname()[1]}"
    (folder / "config.yml").write_text(f"version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: "
                                       f"{folder / 'data'}}}}}\nhttp: {{addr: {host}}}\n")
    server = subprocess.Popen(["docker-registry", "serve", str(folder / "config.yml")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://{host}/v2/", timeout=2):
                return server, host
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("docker-registry did not answer") from None
            time.sleep(0.05)


def _timed(action: object) -> tuple[float, object]:
    started = time.monotonic()
    result = action()  # type: ignore[operator]
    return time.monotonic() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rootfs", type=Path, default=CACHE)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "packaging.json")
    args = parser.parse_args()
    if shutil.which("docker-registry") is None:
        sys.exit("needs docker-registry: apt-get install docker-registry")
    rootfs = _rootfs(args.rootfs)
    runs: dict[str, list[float]] = {"base_push_s": [], "code_build_s": [], "code_rebuild_s": [],
                                    "code_rebuild_cli_s": []}
    uploads: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for i in range(args.repeat):
            folder = Path(scratch) / f"r{i}"
            (folder / "registry").mkdir(parents=True)
            code = folder / "code"
            code.mkdir()
            (code / "train.py").write_text("import sys\nprint('accuracy=0.9', sys.argv[1:])\n")
            (code / "data.csv").write_text("x,y\n" + "".join(f"{n},{n * n}\n" for n in range(20_000)))
            server, host = _registry(folder / "registry")
            try:
                base = f"{host}/bench/python:bookworm"
                seconds, built = _timed(lambda: build_image(rootfs, push=base, rootfs=True))
                runs["base_push_s"].append(seconds)
                uploads["base_push"] = len(built.uploaded)  # type: ignore[attr-defined]
                seconds, built = _timed(lambda: build_image(code, base, push=f"{host}/bench/code:1"))
                runs["code_build_s"].append(seconds)
                uploads["code_build"] = len(built.uploaded)  # type: ignore[attr-defined]
                (code / "train.py").write_text("import sys\nprint('accuracy=0.95', sys.argv[1:])\n")
                seconds, built = _timed(lambda: build_image(code, base, push=f"{host}/bench/code:2"))
                runs["code_rebuild_s"].append(seconds)
                uploads["code_rebuild"] = len(built.uploaded)  # type: ignore[attr-defined]
                (code / "train.py").write_text("import sys\nprint('accuracy=0.97', sys.argv[1:])\n")
                seconds, _ = _timed(lambda: subprocess.run(
                    [sys.executable, "-m", "katibx.cli", "build", str(code), "--base", base, "--push",
                     f"{host}/bench/code:3"], check=True, capture_output=True, cwd=folder, timeout=300))
                runs["code_rebuild_cli_s"].append(seconds)
            finally:
                server.terminate()
                server.wait(timeout=30)
    median = {key: statistics.median(values) for key, values in runs.items()}
    base_mb = rootfs.stat().st_size / 1e6
    write_results(args.out, {"base_tar_mb": round(base_mb, 1), "median": median, "runs": runs, "uploads": uploads,
                             "note": "a fresh docker-registry on 127.0.0.1 per repetition; code: a script and a "
                                     "0.2 MB data file; uploads: blobs sent (base layers of the same registry are "
                                     "mounted)"})
    print(f"Python base ({base_mb:.0f} MB tar) pushed in {median['base_push_s']:.1f} s; code onto it "
          f"{median['code_build_s']:.2f} s; code-only rebuild {median['code_rebuild_s']:.2f} s "
          f"({uploads['code_rebuild']} blobs uploaded), {median['code_rebuild_cli_s']:.2f} s as `katibx build`; "
          f"medians of {args.repeat}; {args.out}")


if __name__ == "__main__":
    main()
