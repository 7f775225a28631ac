"""``katibx build``: local code into a container image without Docker (the append builder of
:mod:`katibx.packaging`), pushed to a registry or written as an OCI layout; prints the image's digest."""

from __future__ import annotations

import dataclasses
import re
import secrets
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.markup import escape

from katibx.cli_common import err, fail, out

if TYPE_CHECKING:
    from katibx.backend import Backend
    from katibx.packaging.deploy import Deployer
    from katibx.preparation import PreparedExperiment

from katibx.packaging.deploy import KINDS
from katibx.packaging.registry import PASSWORD_ENV, USERNAME_ENV
from katibx.packaging.sources import DEFAULT_WORKDIR

DNS_LABEL = re.compile(r"[a-z]([a-z0-9-]*[a-z0-9])?")  # a DNS-1035 label: what a Service may be named
MAX_NAME = 50  # room for the "-worker-N" a training operator appends


@click.command()
@click.argument("source")
@click.option("--base", default="scratch", show_default=True, metavar="IMAGE",
              help="The image to add the code to (registry/repository:tag or @digest; scratch: none).")
@click.option("--push", default=None, metavar="REGISTRY/REPOSITORY[:TAG]", help="Push the image there.")
@click.option("--oci-layout", "layout", default=None, metavar="DIR[:TAG]", help="Write the image as an OCI layout.")
@click.option("--workdir", default=DEFAULT_WORKDIR, show_default=True, help="Where the code goes in the image (its working "
                                                                   "folder).")
@click.option("--cmd", "command", default=None, help="The image's command, as a shell would split it.")
@click.option("--env", multiple=True, metavar="NAME=VALUE", help="An environment variable of the image (repeatable).")
@click.option("--platform", "platform_name", default=None, metavar="OS/ARCH",
              help="Which image of a multi-platform base (default: this machine's).")
@click.option("--insecure", is_flag=True, help="Plain HTTP to the registries (always for localhost and 127.0.0.0/8).")
@click.option("--username", envvar=USERNAME_ENV, default=None,
              help="Registry user (default: from ~/.docker/config.json).")
@click.option("--password", envvar=PASSWORD_ENV, default=None, help="Registry password or token.")
@click.option("--requirements", type=click.Path(dir_okay=False), default=None,
              help="Pure-Python packages to add as a layer (default: a folder SOURCE's requirements.txt).")
@click.option("--python", "python_version", default=None, metavar="X.Y",
              help="The base image's Python, for --requirements (default: its PYTHON_VERSION, else this Python's).")
@click.option("--rootfs", is_flag=True, help="SOURCE is a tar of a root filesystem (mmdebstrap --format=tar): a base.")
@click.option("--dry-run", is_flag=True, help="List what goes into the image; build nothing.")
@click.option("--deploy", type=click.Choice(KINDS), default=None,
              help="Then run the pushed image once on the cluster (pinned to its digest) as a Job or a PyTorchJob, "
                   "following its log; exit 1 if it fails (a failed one is kept, a finished one deleted).")
@click.option("--name", default=None, help="With --deploy: the object's name (default: SOURCE's and a random suffix).")
@click.option("-n", "--namespace", default=None,
              help="With --deploy: its namespace (default: the kubeconfig context's, else default).")
@click.option("--kubeconfig", default=None, metavar="FILE", help="With --deploy: the kubeconfig (default: "
                                                                  "$KUBECONFIG or ~/.kube/config).")
@click.option("--context", default=None, help="With --deploy: the kubeconfig context.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --deploy pytorchjob: Worker replicas beside the Master.")
@click.option("--arg", "arguments", multiple=True, help="With --deploy: an argument of the image's command "
                                                        "(repeatable; e.g. --arg=--lr=0.1).")
@click.option("--start-timeout", type=click.FloatRange(min=0, min_open=True), default=300.0, show_default=True,
              metavar="SECONDS", help="With --deploy: how long its pod may wait for an image it cannot pull.")
def build(source: str, base: str, push: str | None, layout: str | None, workdir: str, command: str | None,
          env: tuple[str, ...], platform_name: str | None, insecure: bool, username: str | None,
          password: str | None, requirements: str | None, python_version: str | None, rootfs: bool,
          dry_run: bool, deploy: str | None, name: str | None, namespace: str | None, kubeconfig: str | None,
          context: str | None, workers: int, arguments: tuple[str, ...], start_timeout: float) -> None:
    """Package SOURCE onto --base as one layer; print the image's digest. SOURCE: a file, a folder, a notebook
    (.ipynb: its code cells become a script, the image's command), file.py:function (with an entry script that
    calls it with the trial's --name=value arguments and prints its metrics), or with --rootfs a root filesystem tar.
    With --deploy, the image then runs once on a Kubernetes cluster and its log follows the digest."""
    from katibx.packaging.build import BuildError, build_image, plan
    from katibx.packaging.registry import RegistryError

    variables = dict(item.partition("=")[::2] for item in env)
    if any("=" not in item or not item.partition("=")[0] for item in env):
        fail([f"--env: expected NAME=VALUE, got {next(i for i in env if '=' not in i or not i.partition('=')[0])!r}"])
    if (username is None) != (password is None):
        fail(["--username and --password: give both (or neither, for ~/.docker/config.json)"])
    try:
        image_command = shlex.split(command) if command else None
    except ValueError as exc:
        fail([f"--cmd: {exc}: {command}"])
    if deploy and not dry_run:
        _check_deploy(push, name, workers, deploy)
    try:
        if dry_run:
            planned = plan(source, workdir)
            for inside, here in planned.files.items():
                shown = here if isinstance(here, Path) else f"(made by katibx build: {len(here)} bytes)"
                out.print(escape(f"{inside}\t{shown}"), highlight=False, soft_wrap=True)
            if planned.command and not command:
                out.print(escape(f"command\t{shlex.join(planned.command)}"), highlight=False, soft_wrap=True)
            return
        built = build_image(source, base, push=push, layout=layout, workdir=workdir,
                            command=image_command, env=variables,
                            platform_name=platform_name, insecure=insecure,
                            credentials=(username, password) if username is not None else None, rootfs=rootfs,
                            requirements=requirements, python_version=python_version)
    except (BuildError, RegistryError) as exc:
        fail([str(exc)])
    if built.pushed:
        err.print(escape(f"pushed {built.pushed} ({len(built.uploaded)} blobs uploaded, the others were there)"),
                  highlight=False)
    if built.layout:
        err.print(escape(f"wrote {built.layout}"), highlight=False)
    out.print(built.digest, highlight=False)
    if deploy and built.pushed:
        from katibx.packaging.deploy import Deployer

        if arguments and not built.command:
            fail(["--arg: the image has no command to pass arguments to; give it one with --cmd"])
        _deploy(deploy, built.pushed, name or _object_name(source), namespace, Deployer(kubeconfig, context,
                                                                                         start_timeout),
                workers, built.command, arguments)


def _check_deploy(push: str | None, name: str | None, workers: int, kind: str) -> None:
    """What --deploy needs, checked before anything is built."""
    import importlib.util

    if not push:
        fail(["--deploy: needs --push (the cluster pulls the image from a registry)"])
    if importlib.util.find_spec("kubernetes") is None:
        fail(["--deploy: needs the kubernetes client: pip install 'katibx[kubernetes]'"])
    if name is not None and not (DNS_LABEL.fullmatch(name) and len(name) <= MAX_NAME):
        fail([f"--name: {name!r} is not a name to deploy under (a lower-case letter, then letters, digits and '-', "
              f"at most {MAX_NAME}: the operator names the pods' services after it)"])
    if workers and kind != "pytorchjob":
        fail(["--workers: only a pytorchjob has workers"])


def _object_name(source: str) -> str:
    """A deployment's default name: the source's (``train.py`` -> ``train-py``) and a random suffix."""
    stem = re.sub(r"[^a-z0-9-]+", "-", Path(source.partition(":")[2] or source).name.lower()).strip("-")
    stem = stem if stem[:1].isalpha() else f"katibx-{stem}"
    return f"{stem[:MAX_NAME - 7].rstrip('-')}-{secrets.token_hex(3)}"


def _deploy(kind: str, image: str, name: str, namespace: str | None, deployer: Deployer, workers: int,
            command: list[str], arguments: tuple[str, ...]) -> None:
    from katibx.packaging.deploy import DeployError, manifest

    what = f"{'job' if kind == 'job' else 'pytorchjob'}/{name}"
    created: list[str] = []  # its namespace, once it exists

    def say_created() -> None:
        created.append(body["metadata"]["namespace"])
        err.print(escape(f"{what} created in namespace {created[0]}"), highlight=False)

    try:
        body = manifest(kind, image, name=name, namespace=namespace or deployer.namespace(), command=command,
                        args=arguments, workers=workers)
        ended = deployer.run(body, lambda line: click.echo(line), say_created)
    except DeployError as exc:
        fail([str(exc)])
    except KeyboardInterrupt:
        fail([f"interrupted: {what} goes on in namespace {created[0]} (kubectl delete {what} -n {created[0]})"
              if created else f"interrupted before {what} was created"], code=130)
    fate = "deleted" if ended.deleted else f"kept: kubectl describe {what} -n {ended.namespace}"
    if not ended.succeeded:
        fail([f"{what} failed: {ended.reason or 'no reason given'} ({fate})"], code=1)
    err.print(escape(f"{what} succeeded ({fate})"), highlight=False)


def with_built_image(prepared: PreparedExperiment, repository: str, backend: Backend,
                     store: str | None) -> PreparedExperiment:
    """``katibx run --build``: the experiment file's folder packaged onto its trial image and pushed; the prepared
    experiment pinned to the pushed digest (what the store keeps, so a resume runs the same code)."""
    from katibx.packaging.build import BuildError
    from katibx.packaging.registry import RegistryError
    from katibx.packaging.trial_image import build_trial_image
    from katibx.store import Store, resolve_store_path, store_files

    if not backend.runs_images:
        fail([f"--build: the {backend.name} backend runs no container images; use --backend kubernetes"])
    path = resolve_store_path(store)
    if path.exists():  # a name already taken is refused before anything is pushed (or a store made)
        with Store(path, create=False) as existing:  # (migrated as the run would)
            existing.refuse_existing(prepared.experiment)
    try:
        experiment, built = build_trial_image(prepared.experiment, repository,
                                              exclude=store_files(path))
    except (BuildError, RegistryError) as exc:
        fail([str(exc)])
    err.print(escape(f"pushed {built.pushed} ({len(built.uploaded)} blobs uploaded, the others were there)"),
              highlight=False, soft_wrap=True)
    return dataclasses.replace(prepared, experiment=experiment)
