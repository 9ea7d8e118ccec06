"""Model directories for the lifecycle tests: copies of the committed digits model, a
distinguishable "version 2" built from it, slow and corrupt copies.

Version 2 is the committed graph with the last Dense layer's columns rolled by
one (onnx package): it answers label (L + 1) % 10 where version 1 answers L,
so every answer says which version computed it. Its bundle.json carries the
new file's sha256, as a real export would.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from service.bundle import file_sha256
from tests.service.serving import DIGITS

# bundle.json before model.onnx, so a half-copied model.onnx (sha256 mismatch) is seen
COPY_ORDER = ("filters.npz", "bundle.json", "model.onnx")


def model_dir(tmp: Path, *names: str) -> Path:
    """`tmp/models/<name>/1/` = the committed digits bundle, for each name (default: digits)."""
    root = tmp / "models"
    for name in names or ("digits",):
        target = root / name / "1"
        shutil.copytree(DIGITS, target)
        if name != "digits":
            _rewrite_bundle(target, name=name, version="1")
    return root


def shifted_version(directory: Path, name: str = "digits", version: str = "2") -> dict[str, bytes]:
    """The files of a version answering (v1's label + 1) % 10: file name -> bytes."""
    model = onnx.load(str(DIGITS / "model.onnx"))
    graph = model.graph
    softmax = next(n for n in graph.node if n.op_type == "Softmax")
    add = next(n for n in graph.node if softmax.input[0] in n.output)
    matmul = next(n for n in graph.node if add.input[0] in n.output)
    rolled = {matmul.input[1]: 1, add.input[1]: 0}  # weights: columns; bias: its only axis
    for init in graph.initializer:
        if init.name in rolled:
            values = np.roll(numpy_helper.to_array(init), 1, axis=rolled[init.name])
            init.CopyFrom(numpy_helper.from_array(values, init.name))
    directory.mkdir(parents=True, exist_ok=True)
    scratch = directory / "model.onnx.build"
    onnx.save(model, str(scratch))
    onnx_bytes = scratch.read_bytes()
    scratch.unlink()
    bundle = json.loads((DIGITS / "bundle.json").read_text())
    bundle.update(name=name, version=version)
    bundle["sha256"] = _sha256(onnx_bytes)
    return {
        "filters.npz": (DIGITS / "filters.npz").read_bytes(),
        "bundle.json": json.dumps(bundle, indent=2).encode(),
        "model.onnx": onnx_bytes,
    }


def write_slowly(directory: Path, files: dict[str, bytes], *, pause_s: float, chunks: int) -> None:
    """Copy file by file, model.onnx in `chunks` pieces with `pause_s` between writes."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in COPY_ORDER:
        data = files[name]
        with (directory / name).open("wb") as out:
            step = -(-len(data) // chunks) if name == "model.onnx" else len(data)
            for start in range(0, len(data), step):
                out.write(data[start : start + step])
                out.flush()
                time.sleep(pause_s)


def tamper(directory: Path) -> None:
    """Flip one byte in the middle of model.onnx, leaving bundle.json's sha256 as it was."""
    path = directory / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _rewrite_bundle(directory: Path, **changes: str) -> None:
    path = directory / "bundle.json"
    bundle = json.loads(path.read_text())
    bundle.update(changes)
    bundle["sha256"] = file_sha256(directory / "model.onnx")
    path.write_text(json.dumps(bundle, indent=2))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
