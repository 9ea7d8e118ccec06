"""Why a repository request cannot be done; each front door maps these to its own errors
(REST: service/routes/repository.py; gRPC: its status codes)."""

from __future__ import annotations


class RepositoryError(Exception):
    """A repository request that cannot be done; subclasses say why (each protocol maps them)."""


class ControlDisabled(RepositoryError):
    """load/unload outside explicit mode."""


class NoSuchModel(RepositoryError):
    """No directory (or nothing loaded) under that name."""


class LoadFailed(RepositoryError):
    """No version of the model could be verified, loaded and warmed up."""


class DefaultModelRequired(RepositoryError):
    """Unloading the default model would fail every request that names no model."""
