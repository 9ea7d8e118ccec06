"""A served model (bundle + engine + batcher) and the registry that resolves names.

`registry.resolve(name, version)` gives a `ServedModel`: what one model version
is (its bundle, its onnxruntime engine, its batcher, its layers and filters).
Decoding (service/decoder.py) and inference (service/dataplane.py) use it;
it does neither itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from service.batcher import Batcher
from service.bundle import FILTERS_FILE, PROBABILITIES_OUTPUT, Bundle
from service.engine import Engine
from service.errors import UnknownModel, UnknownOutput, UnknownVersion


class ServedModel:
    """One version of one model: bundle, session, batcher, layers, filters."""

    def __init__(
        self, name: str, version: str, path: Path, bundle: Bundle, engine: Engine, batcher: Batcher
    ) -> None:
        self.name = name
        self.version = version
        self.versions: list[str] = [version]  # filled in by the registry
        self.path = path
        self.bundle = bundle
        self.engine = engine
        self.batcher = batcher
        self.provider = engine.provider
        spec = bundle.input
        self.input_shape = (spec.height, spec.width, spec.channels)
        self.layers = {f.name: f for f in bundle.feature_maps}

    def unknown_layer_message(self, name: str) -> str:
        known = ", ".join(self.layers) or "none"
        return f"model {self.name} version {self.version} has no layer {name!r}; layers: {known}"

    def check_outputs(self, outputs: Sequence[str]) -> None:
        """UnknownOutput unless every name is the probabilities or one of the layers."""
        for name in outputs:
            if name != PROBABILITIES_OUTPUT and name not in self.layers:
                raise UnknownOutput(self.unknown_layer_message(name))

    # ---- filters --------------------------------------------------------
    @cached_property
    def filters(self) -> dict[str, np.ndarray]:
        """filters.npz (kh x kw x in x out per Conv2D layer), empty when absent."""
        path = self.path / FILTERS_FILE
        if not path.is_file():
            return {}
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}


class Registry:
    """Every served model by name and version; the default name from the settings."""

    def __init__(self, models: dict[str, dict[str, ServedModel]], default: str) -> None:
        self.default = default
        self.replace(models)

    def replace(self, models: dict[str, dict[str, ServedModel]]) -> None:
        """Serve `models` from now on, in one assignment: a lookup sees the old map or the
        new one, never half of each (the model lifecycle swaps versions under traffic)."""
        latest = {}
        for name, versions in models.items():
            ordered = sorted(versions, key=int)
            for model in versions.values():
                model.versions = ordered
            latest[name] = versions[ordered[-1]]
        self._state = (models, latest)

    def models(self) -> dict[str, dict[str, ServedModel]]:
        """name -> version -> model, as served now (treat as read-only; use replace())."""
        return self._state[0]

    def names(self) -> list[str]:
        return list(self._state[0])

    def latest(self) -> list[ServedModel]:
        return list(self._state[1].values())

    def all(self) -> list[ServedModel]:
        return [m for versions in self._state[0].values() for m in versions.values()]

    def resolve(self, name: str | None = None, version: str | None = None) -> ServedModel:
        """The served model; the latest version unless `version` is given. APIError 404."""
        name = name or self.default
        models, latest = self._state  # one read: a concurrent replace() cannot split it
        versions = models.get(name)
        if versions is None:
            raise UnknownModel(f"no model named {name!r}; models: {', '.join(models)}")
        if version is None or version == "":
            return latest[name]
        model = versions.get(version.lstrip("0") or "0") if version.isdigit() else None
        if model is None:
            raise UnknownVersion(
                f"model {name!r} has no version {version!r}; "
                f"versions: {', '.join(sorted(versions, key=int))}",
            )
        return model
