"""``katibx build``: local code appended to a base image without Docker, against a real registry (Debian's
docker-registry on 127.0.0.1), checked with skopeo, unpacked with umoci and run with unshare + chroot."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bcrypt
import pytest
from conftest import katibx_cli, wait_until

TOOLS = ("docker-registry", "skopeo", "umoci", "busybox", "unshare")
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)}: apt-get install docker-registry "
                                                      "skopeo umoci busybox-static (README, Tests; .ci/run does)")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="running an unpacked image with chroot needs root")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(folder: Path, auth: str = "") -> tuple[subprocess.Popen[bytes], str]:
    """Debian's docker-registry (the CNCF distribution registry) on 127.0.0.1, once it answers; and its host:port."""
    host = f"127.0.0.1:{_free_port()}"
    (folder / "config.yml").write_text(f"version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: "
                                       f"{folder / 'data'}}}}}\nhttp: {{addr: {host}}}\n{auth}")
    server = subprocess.Popen(["docker-registry", "serve", str(folder / "config.yml")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)

    def answers() -> bool:
        assert server.poll() is None, "docker-registry ended"
        try:
            with urllib.request.urlopen(f"http://{host}/v2/", timeout=2) as response:
                return response.status == 200
        except urllib.error.HTTPError as exc:
            return exc.code == 401  # it answers, and asks for credentials
        except OSError:
            return False

    wait_until(answers, 30, "the registry's /v2/ answer")
    return server, host


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    server, host = _serve(tmp_path_factory.mktemp("registry"))
    try:
        yield host
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def busybox_base(registry, tmp_path_factory):
    """A base image of one layer holding busybox-static, pushed from scratch."""
    rootfs = tmp_path_factory.mktemp("busybox")
    (rootfs / "bin").mkdir()
    shutil.copy(shutil.which("busybox"), rootfs / "bin" / "busybox")
    base = f"{registry}/katibx/busybox:1"
    made = katibx_cli("build", str(rootfs), "--workdir", "/", "--push", base, cwd=rootfs,
                      store=rootfs / "unused.db")
    assert made.returncode == 0, made.stderr
    return base


def _skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)


def _app(folder: Path) -> Path:
    app = folder / "app"
    app.mkdir()
    (app / "train.sh").write_text("echo \"training in $(pwd)\"\necho accuracy=0.93\n")
    (app / "__pycache__").mkdir()
    (app / "__pycache__" / "junk.pyc").write_bytes(b"not packaged")
    return app


@needs_root
def test_build_push_inspect_pull_unpack_and_run(registry, busybox_base, tmp_path):
    app = _app(tmp_path)
    args = ("build", str(app), "--base", busybox_base, "--cmd", "/bin/busybox sh /app/train.sh", "--env", "MODE=fast")
    first = katibx_cli(*args, "--push", f"{registry}/katibx/app:1", cwd=tmp_path, store=tmp_path / "k.db")
    assert first.returncode == 0, first.stderr
    digest = first.stdout.strip()
    assert digest.startswith("sha256:") and "2 blobs uploaded" in first.stderr  # the code layer and the config
    copy = tmp_path / "elsewhere" / "app"
    shutil.copytree(app, copy)
    os.utime(copy / "train.sh", (1_000_000, 1_000_000))  # another place, other times: the same input
    again = katibx_cli("build", str(copy), *args[2:], "--push", f"{registry}/katibx/app:2", cwd=tmp_path,
                       store=tmp_path / "k.db")
    assert again.stdout.strip() == digest and "0 blobs uploaded" in again.stderr  # the same image

    inspected = json.loads(_skopeo("inspect", "--tls-verify=false", f"docker://{registry}/katibx/app:1").stdout)
    base = json.loads(_skopeo("inspect", "--tls-verify=false", f"docker://{busybox_base}").stdout)
    assert inspected["Digest"] == digest and inspected["Layers"][:1] == base["Layers"]  # base layers, then the code
    assert len(inspected["Layers"]) == 2 and inspected["Labels"]["io.katibx.source"] == "app"
    assert "MODE=fast" in inspected["Env"]

    copied = _skopeo("copy", "--src-tls-verify=false", f"docker://{registry}/katibx/app:1", f"oci:{tmp_path / 'oci'}:app")
    assert copied.returncode == 0, copied.stderr
    bundle = tmp_path / "bundle"
    unpacked = subprocess.run(["umoci", "unpack", "--image", f"{tmp_path / 'oci'}:app", str(bundle)],
                              capture_output=True, text=True, timeout=120)  # strict: checks every diff_id
    assert unpacked.returncode == 0, unpacked.stderr
    assert not (bundle / "rootfs" / "app" / "__pycache__").exists()
    process = json.loads((bundle / "config.json").read_text())["process"]
    ran = subprocess.run(["unshare", "--pid", "--mount", "--net", "--fork", "chroot", str(bundle / "rootfs"),
                          *process["args"]], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and ran.stdout.splitlines()[-1] == "accuracy=0.93", ran.stdout + ran.stderr


@needs_root
def test_an_oci_layout_is_written_offline_and_unpacks(tmp_path):
    app = _app(tmp_path)
    made = katibx_cli("build", str(app), "--oci-layout", f"{tmp_path / 'layout'}:v1", "--cmd", "sh /app/train.sh",
                      cwd=tmp_path, store=tmp_path / "k.db")
    assert made.returncode == 0, made.stderr
    unpacked = subprocess.run(["umoci", "unpack", "--image", f"{tmp_path / 'layout'}:v1", str(tmp_path / "bundle")],
                              capture_output=True, text=True, timeout=120)
    assert unpacked.returncode == 0, unpacked.stderr
    assert (tmp_path / "bundle" / "rootfs" / "app" / "train.sh").read_text().endswith("accuracy=0.93\n")
    listed = katibx_cli("build", str(app), "--dry-run", cwd=tmp_path, store=tmp_path / "k.db")
    assert listed.stdout.split() == ["/app/train.sh", str(app / "train.sh")]


def test_faults_are_one_line_and_push_nothing(registry, tmp_path):
    app = _app(tmp_path)
    cases = {
        ("--push", "127.0.0.1:9/katibx/app:1"): "registry 127.0.0.1:9 cannot be reached",
        ("--base", f"{registry}/katibx/nothing:1", "--push", f"{registry}/katibx/app:x"):
            f"registry {registry}: image {registry}/katibx/nothing:1 not found",
        ("--push", "Not A Reference"): "--push: 'Not A Reference' is not an image reference",
        (): "say where the image goes",
    }
    for extra, message in cases.items():
        result = katibx_cli("build", str(app), *extra, cwd=tmp_path, store=tmp_path / "k.db")
        assert result.returncode == 2 and message in result.stderr, (extra, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    missing = katibx_cli("build", str(tmp_path / "nope"), "--push", f"{registry}/katibx/app:x", cwd=tmp_path,
                         store=tmp_path / "k.db")
    assert missing.returncode == 2 and f"source {tmp_path / 'nope'}: no such file or folder" in missing.stderr
    assert _skopeo("inspect", "--tls-verify=false", f"docker://{registry}/katibx/app:x").returncode != 0


def test_a_registry_with_htpasswd_auth_takes_given_or_stored_credentials_and_names_refusals(tmp_path):
    folder = tmp_path / "registry"
    folder.mkdir()
    (folder / "htpasswd").write_text("alice:" + bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=5)).decode() + "\n")
    server, host = _serve(folder, f"auth: {{htpasswd: {{realm: katibx-test, path: {folder / 'htpasswd'}}}}}\n")
    try:
        app = _app(tmp_path)
        push = ("build", str(app), "--push", f"{host}/katibx/app:1")
        anonymous = katibx_cli(*push, cwd=tmp_path, store=tmp_path / "k.db", env={**os.environ, "DOCKER_CONFIG":
                                                                                 str(tmp_path / "no-config")})
        assert anonymous.returncode == 2 and f"registry {host} asks for credentials" in anonymous.stderr
        wrong = katibx_cli(*push, "--username", "alice", "--password", "guess", cwd=tmp_path, store=tmp_path / "k.db")
        assert wrong.returncode == 2 and wrong.stderr.strip() == (
            f"error: registry {host}: the credentials were refused for katibx/app (docker login {host}, or "
            "--username and --password)")
        given = katibx_cli(*push, "--username", "alice", "--password", "secret", cwd=tmp_path, store=tmp_path / "k.db")
        assert given.returncode == 0 and given.stdout.startswith("sha256:"), given.stderr
        (tmp_path / "docker").mkdir()  # as docker login writes it
        (tmp_path / "docker" / "config.json").write_text(json.dumps(
            {"auths": {host: {"auth": base64.b64encode(b"alice:secret").decode()}}}))
        stored = katibx_cli("build", str(app), "--push", f"{host}/katibx/app:2", cwd=tmp_path, store=tmp_path / "k.db",
                            env={**os.environ, "DOCKER_CONFIG": str(tmp_path / "docker")})
        assert stored.returncode == 0 and stored.stdout == given.stdout, stored.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)


def _python_rootfs() -> Path:
    """A Debian root filesystem with python3 (mmdebstrap, about 20 s), made once and kept between test runs."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "katibx-tests" / "python-bookworm.tar"
    if not cache.is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(".partial")
        made = subprocess.run(["mmdebstrap", "--variant=essential", "--include=python3", "--format=tar", "bookworm",
                               str(partial)], capture_output=True, text=True, timeout=900)
        assert made.returncode == 0, made.stderr[-3000:]
        partial.rename(cache)
    return cache


def _run_image(reference: str, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Pull ``reference`` into an OCI layout with skopeo, unpack it with umoci and run its command in a chroot."""
    layout = f"{folder / 'oci'}:run"
    assert _skopeo("copy", "--src-tls-verify=false", f"docker://{reference}", f"oci:{layout}").returncode == 0
    bundle = folder / "bundle"
    unpacked = subprocess.run(["umoci", "unpack", "--image", layout, str(bundle)], capture_output=True, text=True,
                              timeout=300)
    assert unpacked.returncode == 0, unpacked.stderr
    process = json.loads((bundle / "config.json").read_text())["process"]
    return subprocess.run(["unshare", "--pid", "--mount", "--net", "--fork", "chroot", str(bundle / "rootfs"), "env",
                           "-i", *process["env"], "sh", "-c", f"cd {process['cwd']} && exec \"$@\"", "-",
                           *process["args"], *args], capture_output=True, text=True, timeout=120)  # as a runtime would


def _wheel(folder: Path, name: str, tag: str = "py3-none-any") -> Path:
    """A wheel of one module (``VALUE = 42``), made here: no index is asked for it."""
    path = folder / f"{name}-1.0-{tag}.whl"
    info = f"{name}-1.0.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{name}.py", "VALUE = 42\n")
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        wheel.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n")
        wheel.writestr(f"{info}/RECORD", f"{name}.py,,\n{info}/METADATA,,\n{info}/WHEEL,,\n{info}/RECORD,,\n")
    return path


OFFLINE = {**os.environ, "PIP_NO_INDEX": "1"}  # pip takes the wheels named in the requirements, asks no index


NOTEBOOK = {"cells": [
    {"cell_type": "markdown", "source": ["# Training\n"]},
    {"cell_type": "code", "source": ["import json\n", "weights = [0.5, 0.25]\n"]},
    {"cell_type": "code", "source": "accuracy = 0.5 + sum(weights) / 2\nprint(f'accuracy={accuracy}')\n"},
], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


needs_mmdebstrap = pytest.mark.skipif(shutil.which("mmdebstrap") is None,
                                      reason="needs mmdebstrap: apt-get install mmdebstrap")


@pytest.fixture(scope="module")
def python_base(registry, tmp_path_factory):
    """A Debian image with python3 in the test registry, pushed from the cached root filesystem."""
    base = f"{registry}/katibx/python:bookworm"
    folder = tmp_path_factory.mktemp("python-base")
    made = katibx_cli("build", str(_python_rootfs()), "--rootfs", "--push", base, cwd=folder,
                      store=folder / "k.db", timeout=900)
    assert made.returncode == 0, made.stderr
    return base


@needs_root
@needs_mmdebstrap
@pytest.mark.timeout(1200)
def test_a_file_a_function_and_a_notebook_run_inside_a_python_image(registry, python_base, tmp_path):
    base = python_base
    (tmp_path / "train.py").write_text("import sys\nprint(f'accuracy={0.5 + len(sys.argv) / 10}')\n")
    (tmp_path / "objective.py").write_text("def objective(p):\n    return {'loss': (p['x'] - 3) ** 2, 'x': p['x']}\n")
    (tmp_path / "study.ipynb").write_text(json.dumps(NOTEBOOK))
    project = tmp_path / "project"
    project.mkdir()
    (project / "requirements.txt").write_text(f"{_wheel(project, 'tinymod').name}\n")
    (project / "main.py").write_text("import tinymod\nprint(f'accuracy={tinymod.VALUE / 100}')\n")
    cases = [(("train.py", "--cmd", "python3 /app/train.py"), ("--a=1",), ["accuracy=0.7"]),
             (("project", "--cmd", "python3 main.py"), (), ["accuracy=0.42"]),
             (("objective.py:objective",), ("--x=5",), ["loss=4", "x=5"]),
             (("study.ipynb",), (), ["accuracy=0.875"])]
    def build_and_run(number: int, source: tuple[str, ...], args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        tag = f"{registry}/katibx/code:{number}"
        built = katibx_cli("build", *source, "--base", base, "--push", tag, cwd=tmp_path, store=tmp_path / "k.db",
                           env=OFFLINE)
        uploads = 3 if source[0] == "project" else 2  # the code (and the packages) and the config; the base: mounted
        assert built.returncode == 0 and f"{uploads} blobs uploaded" in built.stderr, built.stderr
        (tmp_path / f"run{number}").mkdir()
        return _run_image(tag, tmp_path / f"run{number}", *args)

    with ThreadPoolExecutor(2) as pool:  # each case waits on its processes: two at a time
        runs = [pool.submit(build_and_run, number, source, args) for number, (source, args, _) in enumerate(cases)]
    for run, (source, _, printed) in zip(runs, cases):
        ran = run.result()
        assert ran.returncode == 0 and ran.stdout.splitlines() == printed, (source, ran.stdout, ran.stderr)


def test_a_notebook_with_a_shell_line_is_refused_with_its_cell(tmp_path):
    cells = [*NOTEBOOK["cells"], {"cell_type": "code", "source": ["!pip install torch\n"]}]
    (tmp_path / "study.ipynb").write_text(json.dumps({**NOTEBOOK, "cells": cells}))
    refused = katibx_cli("build", "study.ipynb", "--dry-run", cwd=tmp_path, store=tmp_path / "k.db")
    assert refused.returncode == 2 and refused.stderr.strip() == (
        "error: notebook study.ipynb: cell 4: '!pip install torch' is a shell or magic line, which runs only in "
        "Jupyter; remove it (dependencies go in the image, not the notebook)")
    (tmp_path / "broken.ipynb").write_text("{not json")
    broken = katibx_cli("build", "broken.ipynb", "--dry-run", cwd=tmp_path, store=tmp_path / "k.db")
    assert broken.returncode == 2 and broken.stderr.startswith("error: notebook broken.ipynb: not a Jupyter notebook")


def test_a_function_itself_is_packaged_with_its_module():
    from katibx.packaging.build import BuildError, plan

    planned = plan(_free_port)
    assert sorted(planned.files) == ["/app/katibx_main.py", "/app/test_image_build.py"]
    assert planned.command == ["python3", "/app/katibx_main.py"]
    assert b"importlib.import_module('test_image_build'), '_free_port'" in planned.files["/app/katibx_main.py"]
    with pytest.raises(BuildError, match="only a module-level function"):
        plan(lambda p: p)


def test_requirements_with_compiled_parts_are_refused_by_name(tmp_path):
    (tmp_path / "requirements.txt").write_text(f"{_wheel(tmp_path, 'fastmod', 'cp311-cp311-linux_x86_64').name}\n")
    (tmp_path / "main.py").write_text("import fastmod\n")
    refused = katibx_cli("build", str(tmp_path), "--oci-layout", str(tmp_path / "layout"), cwd=tmp_path,
                         store=tmp_path / "k.db", env=OFFLINE)
    assert refused.returncode == 2 and refused.stderr.strip().startswith(
        f"error: {tmp_path / 'requirements.txt'}: fastmod is a wheel with compiled parts for another platform"), \
        refused.stderr
    assert not (tmp_path / "layout" / "index.json").exists()


def test_sources_read_as_their_kind_says_and_refuse_what_cannot_run(tmp_path):
    """Preprocessors without a registry: a module named like a script (my-train.py) runs through its entry script;
    a notebook's Python that looks like a magic is kept and a real magic or shell assignment refused; a link out of
    the folder is refused; a layout folder with a colon in its name is a folder, not a tag."""
    from katibx.packaging.build import BuildError, build_image, plan
    from katibx.packaging.registry import ImageRef

    (tmp_path / "my-train.py").write_text("def objective(p):\n    return p['x'] * 2\n")
    planned = plan(f"{tmp_path / 'my-train.py'}:objective")
    run = tmp_path / "run"
    run.mkdir()
    for inside, item in planned.files.items():
        (run / Path(inside).name).write_bytes(item if isinstance(item, bytes) else item.read_bytes())
    ran = subprocess.run([sys.executable, "katibx_main.py", "--x=21"], cwd=run, capture_output=True, text=True)
    assert ran.stdout == "objective=42\n", ran.stderr

    cells = [{"cell_type": "code", "source": "x = (10\n  % 3)\ntext = '''\n!not a shell line\n'''\nprint(x)\n"}]
    (tmp_path / "ok.ipynb").write_text(json.dumps({**NOTEBOOK, "cells": cells}))
    assert b"% 3)" in plan(tmp_path / "ok.ipynb").files["/app/ok.py"]
    (tmp_path / "bad.ipynb").write_text(json.dumps({**NOTEBOOK, "cells": [*cells, {"cell_type": "code",
                                                                                   "source": "files = !ls\n"}]}))
    with pytest.raises(BuildError, match=r"cell 2: 'files = !ls' is a shell or magic line"):
        plan(tmp_path / "bad.ipynb")

    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "main.py").write_text("print('accuracy=1')\n")
    (tmp_path / "secret.env").write_text("TOKEN=x\n")
    (folder / "config.env").symlink_to(tmp_path / "secret.env")
    with pytest.raises(BuildError, match="config.env links outside it"):
        plan(folder)

    (folder / "config.env").unlink()
    weird = tmp_path / "we:ird"
    built = build_image(folder, layout=f"{weird}/out")
    assert built.layout == weird / "out" and (weird / "out" / "index.json").is_file()
    assert ImageRef.parse("docker.io/python:3.11") == ImageRef("registry-1.docker.io", "library/python", "3.11")
    bad_cmd = katibx_cli("build", str(folder), "--cmd", "python 'x", "--oci-layout", str(tmp_path / "l"),
                         cwd=tmp_path, store=tmp_path / "k.db")
    assert bad_cmd.returncode == 2 and bad_cmd.stderr.startswith("error: --cmd: No closing quotation")


SWEEP = """apiVersion: kubeflow.org/v1beta1
kind: Experiment
metadata: {name: built-sweep}
spec:
  objective: {type: maximize, objectiveMetricName: accuracy}
  algorithm: {algorithmName: grid}
  parallelTrialCount: 2
  maxTrialCount: 2
  parameters:
    - {name: lr, parameterType: double, feasibleSpace: {min: "0.01", max: "0.03", step: "0.02"}}
  trialTemplate:
    retain: true
    primaryContainerName: training-container
    trialParameters: [{name: lr, reference: lr}]
    trialSpec:
      apiVersion: batch/v1
      kind: Job
      spec:
        template:
          spec:
            restartPolicy: Never
            containers:
              - name: training-container
                image: BASE
                command: [python3, train.py, "--lr=${trialParameters.lr}"]
"""


@needs_root
@needs_mmdebstrap
@pytest.mark.timeout(900)
def test_run_build_packages_the_folder_onto_the_trial_image_and_the_cluster_runs_it(registry, python_base,
                                                                                       tmp_path):
    from support.fake_kube.cluster import FakeCluster
    from support.fake_kube.images import RegistryPuller

    from katibx.store import Store

    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("import sys\nlr = float(sys.argv[1].partition('=')[2])\n"
                                      "print(f'ran {__file__} with {sys.executable}')\n"
                                      "print(f'accuracy={1 - abs(lr - 0.03):.2f}')\n")
    (project / "exp.yaml").write_text(SWEEP.replace("BASE", python_base))
    (project / "secrets.env").write_text("TOKEN=not for the registry\n")
    (project / ".dockerignore").write_text("# as Docker reads it\nsecrets.env\n")
    Store(project / "k.db").close()  # the store of earlier runs, beside the code
    (project / "trials" / "earlier").mkdir(parents=True)
    (project / "trials" / "earlier" / "stdout.log").write_text("accuracy=0.5\n")
    puller = RegistryPuller(tmp_path / "node", (registry,))
    run = ("run", "exp.yaml", "--backend", "kubernetes", "--build", f"{registry}/katibx/sweep", "-q")
    with FakeCluster(tmp_path, pull=puller) as cluster:
        ran = katibx_cli(*run, "--kubeconfig", str(cluster.kubeconfig), cwd=project, store=project / "k.db",
                         timeout=600)
        jobs = cluster.objects("batch/v1", "Job")
        again = katibx_cli(*run, "--kubeconfig", str(cluster.kubeconfig), cwd=project, store=project / "k.db")
    assert ran.returncode == 0, ran.stderr
    assert again.returncode == 2 and "already exists" in again.stderr and "pushed" not in again.stderr  # nothing built
    digest = json.loads(_skopeo("inspect", "--tls-verify=false", f"docker://{registry}/katibx/sweep:built-sweep")
                        .stdout)["Digest"]
    pinned = f"{registry}/katibx/sweep@{digest}"
    assert f"pushed {pinned}" in ran.stderr
    assert len(jobs) == 2 and all(job["spec"]["template"]["spec"]["containers"][0]["image"] == pinned
                                  for job in jobs)
    assert list(puller.pulled) == [pinned]  # the node pulled the built image, and only it
    code = puller.pulled[pinned] / "rootfs" / "app"
    assert sorted(p.name for p in code.iterdir()) == [".dockerignore", "exp.yaml", "train.py"]  # no store, trials,
    # or what .dockerignore names
    listed = katibx_cli("get", "trials", "built-sweep", "-o", "json", cwd=project, store=project / "k.db")
    trials = json.loads(listed.stdout)["items"]
    assert sorted(t["status"]["observation"]["metrics"][0]["latest"] for t in trials) == ["0.98", "1.00"]
    logs = katibx_cli("logs", "built-sweep", trials[0]["metadata"]["name"], cwd=project, store=project / "k.db")
    assert "ran /app/train.py with /usr/bin/python3" in logs.stdout  # the image's code and Python, not this host's


def test_run_build_faults_are_one_line_and_store_nothing(registry, busybox_base, tmp_path):
    (tmp_path / "train.py").write_text("print('accuracy=1')\n")
    sweep = SWEEP.replace("BASE", busybox_base)
    from_config_map = sweep[:sweep.index("    trialSpec:")] + ("    configMap: {configMapName: templates, configMapNamespace: default, templatePath: job}\n"
                                                          "    successCondition: status.succeeded\n"
                                                          "    failureCondition: status.failed\n")
    cases = [(sweep, ["--build", f"{registry}/katibx/x"], "--build: the local backend runs no container images; "
                                                          "use --backend kubernetes"),
             (from_config_map, ["--backend", "kubernetes", "--build", f"{registry}/katibx/x"],
              "--build: spec.trialTemplate.trialSpec: the trial's spec must be in the experiment"),
             (sweep.replace(busybox_base, "127.0.0.1:1/katibx/busybox:1"), ["--backend", "kubernetes", "--build",
                                                                            f"{registry}/katibx/x"], "--build: "),
             (sweep, ["--backend", "kubernetes", "--build", f"{registry}/katibx/x@sha256:{'0' * 64}"],
              "--build: "),
             (sweep.replace(busybox_base, f"{registry}/katibx/missing:1"),
              ["--backend", "kubernetes", "--build", f"{registry}/katibx/x"], "--build: ")]
    for text, flags, message in cases:
        (tmp_path / "exp.yaml").write_text(text)
        ran = katibx_cli("run", "exp.yaml", *flags, "--kubeconfig", str(tmp_path / "none"), cwd=tmp_path,
                         store=tmp_path / "k.db") if "kubernetes" in flags else \
            katibx_cli("run", "exp.yaml", *flags, cwd=tmp_path, store=tmp_path / "k.db")
        lines = ran.stderr.strip().splitlines()
        assert ran.returncode == 2 and len(lines) == 1 and message in lines[0], (flags, ran.stderr)
        assert "Traceback" not in ran.stderr
        assert not (tmp_path / "k.db").exists()  # refused before the store was made
    listed = _skopeo("list-tags", "--tls-verify=false", f"docker://{registry}/katibx/x")
    assert listed.returncode != 0  # nothing was pushed


OBJECTIVE = '''import os


def objective(params):
    """Runs in the image: its entry script is there, and the host's katibx is not; values keep their types."""
    assert os.path.exists("/app/katibx_main.py")
    assert params["mode"] == "1" and params["flag"] is False and params["limit"] == float("inf"), params
    assert params["tag"] == "$(HOME) a$$b", params  # as given: Kubernetes expands $(NAME) and $$ where not escaped
    try:
        import katibx  # noqa: F401
    except ImportError:
        pass
    else:
        raise AssertionError("katibx imported: not the image's Python")
    return {"score": -(params["x"] - 2) ** 2, "width": params["width"]}
'''


@needs_root
@needs_mmdebstrap
@pytest.mark.timeout(900)
def test_tune_runs_a_function_objective_as_jobs_on_its_built_image(registry, python_base, tmp_path, monkeypatch):
    from support.fake_kube.cluster import FakeCluster
    from support.fake_kube.images import RegistryPuller

    import katibx
    from katibx.store import Store

    (tmp_path / "shapes.py").write_text(OBJECTIVE)
    monkeypatch.syspath_prepend(str(tmp_path))
    from shapes import objective

    puller = RegistryPuller(tmp_path / "node", (registry,))
    with FakeCluster(tmp_path, pull=puller) as cluster:
        monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
        space = {"x": katibx.search.int(1, 4), "mode": katibx.search.categorical(["1"]),
                 "flag": katibx.search.categorical([False]), "width": 7, "limit": float("inf"),
                 "tag": "$(HOME) a$$b"}
        options = dict(objective_metric_name="score", additional_metric_names=["width"], algorithm_name="grid",
                       backend="kubernetes", image=python_base, build=f"{registry}/katibx/fn",
                       store=str(tmp_path / "k.db"), progress=False)
        result = katibx.tune("fn-sweep", objective, space, max_trial_count=3, parallel_trial_count=3, **options)
        created = [c for c in cluster.calls if c.method == "POST" and c.path.endswith("/jobs")]
        with pytest.raises(katibx.ValidationError, match="experiment 'fn-sweep' is in the store"):
            katibx.tune("fn-sweep", objective, space, max_trial_count=1, parallel_trial_count=1, **options)
        more = katibx.tune("fn-sweep", objective, space, max_trial_count=1, parallel_trial_count=1,
                           load_if_exists=True, **options)
    assert len(result.trials) == 3
    assert more.best_params == {"x": 2, "mode": "1", "flag": False} and more.best_value == 0
    assert sorted(t.value for t in more.trials) == [-4, -1, -1, 0]  # x = 1..4 on the grid
    with Store(tmp_path / "k.db") as store:
        spec = store.get_experiment("fn-sweep").experiment.spec.trial_template.trial_spec
    image = spec["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith(f"{registry}/katibx/fn@sha256:") and list(puller.pulled) == [image]
    assert len(created) == 3 and len(more.trials) == 4  # the fourth on the stored image: nothing built again


def test_tune_refuses_a_build_it_cannot_run_in_one_line(registry, tmp_path, monkeypatch):
    import katibx
    from katibx.validation import ValidationError

    (tmp_path / "shapes.py").write_text(OBJECTIVE)
    monkeypatch.syspath_prepend(str(tmp_path))
    from shapes import objective

    cases = [({"image": "python:3"}, "image, build: give both"),
             ({"build": f"{registry}/katibx/fn"}, "image, build: give both"),
             ({"image": "python:3", "build": f"{registry}/katibx/fn"}, "build: the local backend runs no container"),
             ({"image": "127.0.0.1:1/python:3", "build": f"{registry}/katibx/fn", "backend": "kubernetes"},
              "build: registry 127.0.0.1:1 cannot be reached")]
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    for options, message in cases:
        with pytest.raises(ValidationError) as raised:
            katibx.tune("fn", objective, {"x": katibx.search.int(1, 3)}, objective_metric_name="score",
                        store=str(tmp_path / "k.db"), **options)
        assert len(raised.value.errors) == 1 and raised.value.errors[0].startswith(message), raised.value.errors
        assert not (tmp_path / "k.db").exists()


DEPLOYED = """import os, sys
print(f"rank={os.environ.get('RANK', '-')} args={sys.argv[1:]} file={__file__}")
sys.exit(3 if "--fail" in sys.argv else 0)
"""


@needs_root
@needs_mmdebstrap
@pytest.mark.timeout(900)
def test_build_deploy_runs_the_image_once_as_a_job_or_a_pytorchjob_and_follows_its_log(registry, python_base,
                                                                                         tmp_path):
    from support.fake_kube.cluster import FakeCluster
    from support.fake_kube.images import RegistryPuller

    (tmp_path / "train.py").write_text(DEPLOYED)
    build = ("build", "train.py", "--base", python_base, "--cmd", "python3 /app/train.py")
    puller = RegistryPuller(tmp_path / "node", (registry,))
    with FakeCluster(tmp_path, pull=puller) as cluster:
        where = ("--kubeconfig", str(cluster.kubeconfig))
        job = katibx_cli(*build, "--push", f"{registry}/katibx/deploy:1", "--deploy", "job", "--name", "once",
                         "--arg=--lr=0.1", *where, cwd=tmp_path, store=tmp_path / "k.db", timeout=300)
        assert job.returncode == 0, job.stderr
        digest, *log = job.stdout.splitlines()
        assert log == ["rank=- args=['--lr=0.1'] file=/app/train.py"]  # the image's code, its command + --arg
        assert list(puller.pulled) == [f"{registry}/katibx/deploy@{digest}"]  # pinned to the digest
        assert "job/once succeeded (deleted)" in job.stderr
        again = katibx_cli(*build, "--push", f"{registry}/katibx/deploy:1", "--deploy", "job", "--name", "once",
                           "--arg=--lr=0.2", *where, cwd=tmp_path, store=tmp_path / "k.db", timeout=300)
        assert again.returncode == 0 and again.stdout.splitlines()[1:] == [
            "rank=- args=['--lr=0.2'] file=/app/train.py"], again.stderr  # its own pod's log, not the first's
        wait_until(lambda: not cluster.objects("batch/v1", "Job"), 30, "the finished Jobs' deletion")

        torch = katibx_cli(*build, "--push", f"{registry}/katibx/deploy:2", "--deploy", "pytorchjob", "--workers", "1",
                           "--name", "dist", "--arg=--fail", *where, cwd=tmp_path, store=tmp_path / "k.db",
                           timeout=300)
        assert torch.returncode == 1, torch.stderr
        assert torch.stdout.splitlines()[1:] == ["rank=0 args=['--fail'] file=/app/train.py"]
        assert torch.stderr.strip().splitlines()[-1].startswith("error: pytorchjob/dist failed: ")
        kept = cluster.objects("kubeflow.org/v1", "PyTorchJob")
        replicas = kept[0]["spec"]["pytorchReplicaSpecs"]
        assert [r["replicas"] for r in replicas.values()] == [1, 1]
        assert {r["template"]["spec"]["containers"][0]["image"] for r in replicas.values()} == \
            {f"{registry}/katibx/deploy@{digest}"}  # the same code: only the tag differs

        puller.refused.add("katibx/unpullable")
        stuck = katibx_cli(*build, "--push", f"{registry}/katibx/unpullable:1", "--deploy", "job", "--name", "stuck",
                           "--start-timeout", "1", *where, cwd=tmp_path, store=tmp_path / "k.db", timeout=300)
        assert stuck.returncode == 1 and re.search(r"error: job/stuck failed: (ErrImagePull|ImagePullBackOff): .*"
                                                   r"401 Unauthorized \(deleted\)$", stuck.stderr.strip()), stuck.stderr
        wait_until(lambda: not cluster.objects("batch/v1", "Job"), 30, "the stuck Job's deletion")


def test_build_deploy_refusals_are_one_line(registry, busybox_base, tmp_path):
    (tmp_path / "train.py").write_text(DEPLOYED)
    (tmp_path / "kubeconfig").write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\nusers: [{name: u, user: {}}]\n")
    build = ("build", "train.py", "--base", busybox_base, "--kubeconfig", str(tmp_path / "kubeconfig"))
    cases = [((), ["--deploy", "job"], "--deploy: needs --push", 2),
             (("--push", f"{registry}/katibx/d:1"), ["--deploy", "job", "--name", "Bad_Name"], "--name: ", 2),
             (("--push", f"{registry}/katibx/d:1"), ["--deploy", "job", "--workers", "2"], "--workers: ", 2),
             (("--push", f"{registry}/katibx/d:1"), ["--deploy", "job"],
              "the cluster at http://127.0.0.1:1 cannot be reached", 2)]
    for push, flags, message, code in cases:
        ran = katibx_cli(*build, *push, *flags, cwd=tmp_path, store=tmp_path / "k.db")
        errors = [line for line in ran.stderr.splitlines() if line.startswith("error")]
        assert ran.returncode == code and len(errors) == 1 and message in errors[0], (flags, ran.stderr)
        assert "Traceback" not in ran.stderr
        if "reached" not in message:  # refused before anything was built
            assert _skopeo("list-tags", "--tls-verify=false", f"docker://{registry}/katibx/d").returncode != 0


class _TokenService:
    """A registry token service (the distribution spec's bearer-token flow): Basic credentials in, a JWT signed
    with RS256 out, carrying its certificate (x5c) that the registry trusts through its rootcertbundle."""

    def __init__(self, folder: Path, users: dict[str, str]) -> None:
        import datetime
        import http.server
        import threading

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "katibx-test-token")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                            .not_valid_before(now - datetime.timedelta(hours=1))
                            .not_valid_after(now + datetime.timedelta(days=1)).sign(self.key, hashes.SHA256()))
        self.bundle = folder / "token.pem"
        self.bundle.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        self.users, self.requests = users, []
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                service.requests.append(query)
                given = self.headers.get("Authorization", "")
                user, _, password = base64.b64decode(given.removeprefix("Basic ")).decode().partition(":") \
                    if given.startswith("Basic ") else ("", "", "")
                if not user or service.users.get(user) != password:
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"token": service.token(user, query)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, user: str, query: dict[str, list[str]]) -> str:
        import time

        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding

        def part(data: dict[str, object]) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

        access = []
        for scope in query.get("scope", []):  # repository:NAME:ACTIONS, one per parameter
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        header = part({"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]})
        now = int(time.time())
        claims = part({"iss": "katibx-test-issuer", "sub": user, "aud": query["service"][0], "exp": now + 300,
                       "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access})
        signature = self.key.sign(f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{header}.{claims}." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_registry_with_bearer_tokens_takes_credentials_through_its_token_service(registry, busybox_base, tmp_path):
    folder = tmp_path / "registry"
    folder.mkdir()
    tokens = _TokenService(folder, {"alice": "secret"})
    server, host = _serve(folder, f"auth: {{token: {{realm: '{tokens.realm}', service: katibx-test, issuer: "
                                  f"katibx-test-issuer, rootcertbundle: {tokens.bundle}}}}}\n")
    try:
        app = _app(tmp_path)
        push = ("build", str(app), "--base", busybox_base, "--push", f"{host}/katibx/app:1")
        no_config = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "no-config")}
        anonymous = katibx_cli(*push, cwd=tmp_path, store=tmp_path / "k.db", env=no_config)
        assert anonymous.returncode == 2 and anonymous.stderr.strip() == (
            f"error: registry {host}: the token service refused the credentials (HTTP 401)"), anonymous.stderr
        wrong = katibx_cli(*push, "--username", "alice", "--password", "guess", cwd=tmp_path, store=tmp_path / "k.db",
                           env=no_config)
        assert wrong.returncode == 2 and "the token service refused the credentials" in wrong.stderr
        given = katibx_cli(*push, "--username", "alice", "--password", "secret", cwd=tmp_path, store=tmp_path / "k.db",
                           env=no_config)
        assert given.returncode == 0 and given.stdout.startswith("sha256:"), given.stderr
        scopes = {scope for request in tokens.requests for scope in request.get("scope", [])}
        assert {"pull", "push"} in [set(scope.split(":")[2].split(",")) for scope in scopes
                                    if scope.startswith("repository:katibx/app:")]  # what the challenge asked for
        inspected = _skopeo("inspect", "--tls-verify=false", "--creds", "alice:secret", f"docker://{host}/katibx/app:1")
        assert inspected.returncode == 0 and json.loads(inspected.stdout)["Digest"] == given.stdout.strip()
    finally:
        server.terminate()
        server.wait(timeout=30)
        tokens.close()


def test_a_folder_source_leaves_out_what_is_skipped_excluded_or_ignored_without_reading_it(tmp_path):
    from katibx.packaging.build import plan

    app = tmp_path / "app"
    (app / ".git").mkdir(parents=True)
    os.symlink("b", app / ".git" / "a")  # a loop in a folder never packaged: never followed either
    os.symlink("a", app / ".git" / "b")
    (app / "train.py").write_text("print('accuracy=1')\n")
    (app / "data").mkdir()
    (app / "data" / "big.bin").write_bytes(b"0" * 1024)
    (app / "data" / "keep.csv").write_text("x\n1\n")
    (app / "run.log").write_text("old output\n")
    (app / "sub").mkdir()
    (app / "sub" / "kept.log").write_text("a * never crosses a /\n")
    (app / "store" / "trials").mkdir(parents=True)
    (app / "store" / "k.db").write_text("")
    (app / ".dockerignore").write_text("# Docker's syntax\ndata\n!data/keep.csv\n*.log\n", encoding="utf-8-sig")
    (tmp_path / "link").symlink_to(tmp_path)  # the store named through a link: still left out
    planned = plan(app, exclude=[tmp_path / "link" / "app" / "store" / "k.db", app / "store" / "trials"])
    assert sorted(planned.files) == ["/app/.dockerignore", "/app/data/keep.csv", "/app/sub/kept.log",
                                     "/app/train.py"]
    (app / ".dockerignore").write_text("data\n", encoding="utf-16")  # as PowerShell 5 writes it
    ran = katibx_cli("build", str(app), "--dry-run", cwd=tmp_path, store=tmp_path / "k.db")
    assert ran.returncode == 2 and "cannot be read as UTF-8 text" in ran.stderr and "Traceback" not in ran.stderr
