"""The curl examples in docs/api.md and the README run as written (live server, free port)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from tests.service.serving import ROOT, LiveServer

DOCS = {"docs/api.md": 10, "README.md": 8}  # document -> how many curl examples at least


def curl_commands(doc: Path) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for command in block.replace("\\\n", " ").splitlines():
            command = command.split("  # ")[0].strip()
            if command.startswith("curl "):
                commands.append(command)
    return commands


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("doc", sorted(DOCS))
def test_every_curl_example_works(server: LiveServer, tmp_path: Path, doc: str) -> None:
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    commands = curl_commands(ROOT / doc)
    assert len(commands) >= DOCS[doc]
    for command in commands:
        run = command.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
        result = subprocess.run(["bash", "-c", run], cwd=tmp_path, capture_output=True, timeout=30)
        assert result.returncode == 0, (command, result.stderr)
        out = result.stdout
        if " -o " in command:
            name = command.split(" -o ")[1].split()[0]
            Image.open(tmp_path / name).verify()
        elif " -i " in command:
            assert out.startswith(b"HTTP/1.1 415"), out[:200]
        elif "| " not in command:
            doc = json.loads(out)
            assert "error" not in doc, (command, doc)
        else:
            assert out, command
