"""What is on disk: `<model_dir>/<name>/<version>/`, each version checked before it may load.

A version directory is a candidate only when `bundle.json` validates and
`model.onnx`'s sha256 matches it (`service.bundle.read_bundle`), so a
directory still being copied is skipped with its reason instead of being half
served. Hashing a large model every poll would be wasteful: a verdict is kept
per fingerprint (size and mtime of both files) and recomputed only when one of
them changes, which a copy in progress always does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from service.bundle import BUNDLE_FILE, MODEL_FILE, Bundle, BundleError, read_bundle

log = logging.getLogger("convserve.lifecycle")

Fingerprint = tuple[tuple[int, int] | None, ...]


@dataclass(frozen=True)
class Candidate:
    """One version directory and its verdict: a valid `bundle`, or the `reason` it is not."""

    name: str
    version: str
    path: Path
    fingerprint: Fingerprint
    bundle: Bundle | None = None
    reason: str = ""

    @property
    def valid(self) -> bool:
        return self.bundle is not None


def fingerprint(directory: Path) -> Fingerprint:
    """(size, mtime_ns) of bundle.json and model.onnx; None for a missing one."""
    out = []
    for name in (BUNDLE_FILE, MODEL_FILE):
        try:
            st = (directory / name).stat()
        except OSError:
            out.append(None)
        else:
            out.append((st.st_size, st.st_mtime_ns))
    return tuple(out)


def _version_dirs(name_dir: Path) -> dict[str, Path]:
    """Numeric subdirectories by normalised version ("007" -> "7"); anything else is ignored,
    so `2.tmp/` (or `.2/`) can be filled and then renamed to `2/` in one atomic step."""
    found: dict[str, Path] = {}
    try:
        entries = list(name_dir.iterdir())
    except OSError:
        return found
    for path in entries:
        if path.name.isdigit() and path.is_dir():
            found[str(int(path.name))] = path
    return found


class Scanner:
    """Reads the model directory; remembers each version's verdict per fingerprint."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = Path(model_dir)
        self._verdicts: dict[Path, Candidate] = {}

    def names(self) -> list[str]:
        """Model names on disk: every visible subdirectory of the model directory."""
        try:
            return sorted(
                p.name for p in self.model_dir.iterdir() if p.is_dir() and p.name[0] != "."
            )
        except OSError as exc:
            log.warning("cannot read model directory %s: %s", self.model_dir, exc)
            return []

    def scan(self) -> dict[str, dict[str, Candidate]]:
        """name -> version -> Candidate for everything on disk (blocking: run it in a thread)."""
        return {name: self.scan_model(name) for name in self.names()}

    def scan_model(self, name: str, *, fresh: bool = False) -> dict[str, Candidate]:
        """One model's versions; `fresh` re-verifies even unchanged directories."""
        out = {}
        for version, path in _version_dirs(self.model_dir / name).items():
            out[version] = self._check(name, version, path, fresh=fresh)
        seen = {c.path for c in out.values()}
        for path in [p for p in self._verdicts if p.parent.name == name and p not in seen]:
            del self._verdicts[path]  # the directory is gone: forget its verdict
        return out

    def _check(self, name: str, version: str, path: Path, *, fresh: bool) -> Candidate:
        print_ = fingerprint(path)
        known = self._verdicts.get(path)
        if known is not None and known.fingerprint == print_ and not fresh:
            return known
        try:
            bundle = read_bundle(path)  # validates bundle.json, then model.onnx's sha256
        except BundleError as exc:
            verdict = Candidate(name, version, path, print_, reason=_short(str(exc), path))
            if known is None or known.reason != verdict.reason:
                log.warning("skipping %s version %s: %s", name, version, verdict.reason)
        else:
            if bundle.name != name or str(int(bundle.version)) != version:
                log.warning(
                    "%s: bundle.json says %s/%s; serving it as %s/%s (the directory decides)",
                    path,
                    bundle.name,
                    bundle.version,
                    name,
                    version,
                )
            verdict = Candidate(name, version, path, print_, bundle=bundle)
        if fingerprint(path) != print_:  # changed while we read it: judge it again next time
            return Candidate(name, version, path, (), reason="files changed while being checked")
        self._verdicts[path] = verdict
        return verdict


def _short(message: str, path: Path) -> str:
    """The reason without the absolute directory in front (the index names the model)."""
    prefix = f"{path}/"
    message = message.replace(prefix, "").replace(f"{path}: ", "")
    if message.startswith(f"no {BUNDLE_FILE}") or message.startswith(f"no {MODEL_FILE}"):
        message += " (still being copied?)"
    return message
