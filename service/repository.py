"""Find model bundles on disk: `<model_dir>/<name>/<version>/`, versions numeric.

As in TensorFlow Serving, the highest numeric version of a name is the one
served by default; the older ones stay addressable by `version`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from service.bundle import BUNDLE_FILE, Bundle, BundleError, read_bundle

log = logging.getLogger("convserve.repository")


@dataclass(frozen=True)
class BundleRef:
    """One validated bundle directory."""

    name: str
    version: str
    path: Path
    bundle: Bundle


def discover(model_dir: Path) -> dict[str, list[BundleRef]]:
    """name -> its bundles, oldest version first. Raises BundleError on a broken one."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise BundleError(f"model directory {model_dir.resolve()} does not exist")
    found: dict[str, list[BundleRef]] = {}
    for name_dir in sorted(p for p in model_dir.iterdir() if p.is_dir()):
        versions = [
            p
            for p in name_dir.iterdir()
            if p.is_dir() and p.name.isdigit() and (p / BUNDLE_FILE).exists()
        ]
        refs = []
        for version_dir in sorted(versions, key=lambda p: int(p.name)):
            bundle = read_bundle(version_dir)
            if bundle.name != name_dir.name or int(bundle.version) != int(version_dir.name):
                log.warning(
                    "%s: bundle.json says %s/%s; serving it as %s/%s (the directory decides)",
                    version_dir,
                    bundle.name,
                    bundle.version,
                    name_dir.name,
                    version_dir.name,
                )
            refs.append(BundleRef(name_dir.name, str(int(version_dir.name)), version_dir, bundle))
        if refs:
            found[name_dir.name] = refs
    if not found:
        raise BundleError(
            f"no model bundles under {model_dir.resolve()} "
            f"(expected <name>/<version>/{BUNDLE_FILE})"
        )
    return found
