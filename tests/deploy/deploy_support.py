"""Helpers for the offline deployment checks: find the tools, render kustomize,
read Dockerfiles and .dockerignore the way Docker does.

Small parsers rather than extra dependencies: the tests must run on a machine
with no container engine and no cluster.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
DOCKER = ROOT / "docker"
OVERLAYS = ("cpu", "gpu")
# every kustomization the repository ships, rendered and validated
KUSTOMIZATIONS = {
    "cpu": K8S / "overlays" / "cpu",
    "gpu": K8S / "overlays" / "gpu",
    "kserve": K8S / "kserve",
}
# rendered, validated and scanned like the above, but neither an overlay nor the
# plain KServe predictor (tests/deploy/test_deploy_model_volume.py checks them)
MODEL_VOLUME_KUSTOMIZATIONS = {
    "kserve-model-volume": K8S / "kserve-model-volume",
    "publish-model": K8S / "publish-model",
}
DOCKERFILES = {
    "gpu": DOCKER / "Dockerfile",
    "cpu": DOCKER / "Dockerfile.cpu",
    "model": DOCKER / "Dockerfile.model",
}
SERVICE_DOCKERFILES = ("gpu", "cpu")  # the two images that run the server
CHECKOV_CONFIG = Path(__file__).with_name("checkov.yaml")


def allow_list() -> set[str]:
    """The check ids tests/deploy/checkov.yaml deliberately skips (its commented allow-list)."""
    return set(yaml.safe_load(CHECKOV_CONFIG.read_text()).get("skip-check", []))


def missing_tool(what: str) -> None:
    """Skip (or, under CI, fail) when a validator is not installed.

    `make test` installs them all, so in CI a missing one is a broken setup,
    not something to pass quietly.
    """
    message = f"{what} is not installed here; `make test` installs it (see Makefile)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def venv_tool(name: str) -> str | None:
    """A console script of the running interpreter's venv, or one on PATH."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else shutil.which(name)


def checkov_path() -> str | None:
    """checkov lives in its own venv (.venv-checkov): it pins packaging<24."""
    explicit = os.environ.get("CONVSERVE_CHECKOV")
    if explicit:
        return explicit
    own = ROOT / ".venv-checkov" / "bin" / "checkov"
    return str(own) if own.exists() else shutil.which("checkov")


def kubectl() -> str:
    """kubectl's path, or a skip that says why (the issue allows skipping here)."""
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not on PATH: cannot render the kustomizations (install kubectl)")
    return path


@functools.cache
def render_text(name: str) -> str:
    """`kubectl kustomize` output of one shipped kustomization (cached per session)."""
    out = subprocess.run(
        [kubectl(), "kustomize", str({**KUSTOMIZATIONS, **MODEL_VOLUME_KUSTOMIZATIONS}[name])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"kubectl kustomize {name} failed:\n{out.stderr}"
    return out.stdout


# the opt-in components, composed with an overlay as a user would
COMPONENTS = ("servicemonitor", "model-from-image")
COMPOSED = {
    "cpu+servicemonitor": ("cpu", ("servicemonitor",)),
    "gpu+all-components": ("gpu", COMPONENTS),
    # model-volume replaces model-from-image (both provide the `models` volume)
    "cpu+model-volume": ("cpu", ("servicemonitor", "model-volume")),
}


@functools.cache
def render_composed_text(name: str) -> str:
    """Render an overlay plus components through a throw-away kustomization."""
    overlay, components = COMPOSED[name]
    where = Path(tempfile.mkdtemp(prefix="convserve-kustomize-"))
    try:
        relative = functools.partial(os.path.relpath, start=where)  # kustomize wants relative
        lines = ["apiVersion: kustomize.config.k8s.io/v1beta1", "kind: Kustomization"]
        lines += ["resources:", f"  - {relative(K8S / 'overlays' / overlay)}", "components:"]
        lines += [f"  - {relative(K8S / 'components' / c)}" for c in components]
        (where / "kustomization.yaml").write_text("\n".join(lines) + "\n")
        out = subprocess.run(
            [kubectl(), "kustomize", str(where)], capture_output=True, text=True, timeout=60
        )
    finally:
        shutil.rmtree(where)
    assert out.returncode == 0, f"kubectl kustomize {name} failed:\n{out.stderr}"
    return out.stdout


def render_composed(name: str) -> list[dict]:
    """The rendered documents of one overlay + components combination."""
    return [d for d in yaml.safe_load_all(render_composed_text(name)) if d]


def render(name: str) -> list[dict]:
    """The rendered documents of one shipped kustomization."""
    return [d for d in yaml.safe_load_all(render_text(name)) if d]


def one(docs: Iterable[dict], kind: str) -> dict:
    """The single document of `kind` (fails if there are none or several)."""
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def server_container(pod_spec: dict) -> dict:
    """The server container of a pod spec (the Deployment's or KServe's)."""
    names = {"convserve", "kserve-container"}
    found = [c for c in pod_spec["containers"] if c["name"] in names]
    assert len(found) == 1, (
        f"no server container among {[c['name'] for c in pod_spec['containers']]}"
    )
    return found[0]


def container_env(container: dict, docs: list[dict]) -> dict[str, str]:
    """The container's literal environment: envFrom ConfigMaps, then `env` values.

    Only literal values (and ConfigMap data) are returned; `valueFrom` entries
    map to None-free placeholders so their *names* are still checked.
    """
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        assert ref in maps, f"envFrom references ConfigMap {ref!r}, which is not rendered"
        env.update(maps[ref])
    for var in container.get("env", []):
        env[var["name"]] = var.get("value", "<from valueFrom>")
    return env


# ---------------------------------------------------------------- Dockerfile


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, ENV, ...
    args: str  # the rest of the (continuation-joined) line
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """ENV of this stage (Docker's `KEY=VALUE ...` form), later wins."""
        result: dict[str, str] = {}
        for ins in self.all("ENV"):
            for token in shlex.split(ins.args):
                key, sep, value = token.partition("=")
                assert sep, f"line {ins.line}: legacy `ENV KEY VALUE` form; use KEY=VALUE"
                result[key] = value
        return result


def instructions(path: Path) -> Iterator[Instruction]:
    """Dockerfile instructions with line continuations joined and comments dropped."""
    buffer, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        keyword, _, args = buffer.partition(" ")
        yield Instruction(keyword.upper(), args.strip(), start)
        buffer = ""
    assert not buffer, f"{path}: dangling line continuation"


def stages(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, build stages) of a Dockerfile."""
    args: dict[str, str] = {}
    result: list[Stage] = []
    for ins in instructions(path):
        if ins.keyword == "FROM":
            words = ins.args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            result.append(Stage(base=words[0], name=name))
        elif not result:
            assert ins.keyword == "ARG", f"{path}:{ins.line}: only ARG may precede FROM"
            key, _, default = ins.args.partition("=")
            args[key] = default.strip('"')
        else:
            result[-1].instructions.append(ins)
    return args, result


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form instruction (fails on shell form)."""
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        raise AssertionError(f"not exec form (JSON array): {args}") from None
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def healthcheck_command(stage: Stage) -> list[str]:
    """The HEALTHCHECK's exec-form CMD of a stage."""
    (ins,) = stage.all("HEALTHCHECK")
    options, sep, command = ins.args.partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {ins.args}"
    assert all(o.startswith("--") for o in options.split()), options
    return exec_form(command)


def substitute(text: str, values: dict[str, str]) -> str:
    """Expand ${NAME} / $NAME from build-arg defaults."""
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m.group(1) or m.group(2), m.group(0)), text
    )


# ------------------------------------------------------------- .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's (moby patternmatcher) glob: `**` spans directories, `*` does not."""
    out, i = "^", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                out += "(?:.*/)?"
                i += 1
            else:
                out += ".*"
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + "$")


@dataclass
class DockerIgnore:
    """Ordered patterns of a .dockerignore; the last matching one decides."""

    rules: list[tuple[bool, str, re.Pattern[str]]]  # (is_exception, pattern, regex)

    @classmethod
    def read(cls, path: Path) -> DockerIgnore:
        rules = []
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exception = line.startswith("!")
            pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            rules.append((exception, pattern, _pattern_regex(pattern)))
        return cls(rules)

    def excluded(self, relpath: str) -> bool:
        """Whether `relpath` (POSIX, relative to the context) stays out of the context."""
        parts = relpath.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        verdict = False
        for exception, _, regex in self.rules:
            if any(regex.match(p) for p in prefixes):
                verdict = not exception
        return verdict

    def may_reinclude_below(self, reldir: str) -> bool:
        """Could an exception pattern let something under `reldir` back in?"""
        for exception, pattern, _ in self.rules:
            if not exception:
                continue
            head = pattern.split("/")[0]
            if any(ch in head for ch in "*?[") or pattern.startswith(reldir + "/"):
                return True
        return False

    def context(self, root: Path) -> list[str]:
        """Every file `docker build` would send from `root` (POSIX relative paths)."""
        sent: list[str] = []
        for dirpath, dirnames, filenames in os.walk(root):
            rel = Path(dirpath).relative_to(root).as_posix()
            rel = "" if rel == "." else rel + "/"
            keep = []
            for d in dirnames:
                path = rel + d
                if not self.excluded(path) or self.may_reinclude_below(path):
                    keep.append(d)
            dirnames[:] = keep
            sent += [rel + f for f in filenames if not self.excluded(rel + f)]
        return sorted(sent)
