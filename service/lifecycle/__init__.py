"""Model lifecycle: new versions from the model directory without a restart or a failed request.

scan.py reads and verifies the directory, control.py decides the changes and
loads and warms up new versions, publish.py swaps them into the registry and
retires the ones taken out, release.py frees a retired version's session,
index.py is what the repository API reports, metrics.py the Prometheus series.
Nothing here knows HTTP or gRPC: the front doors call
`ModelControl.index/load/unload` and map `RepositoryError` to their errors.
"""

from service.lifecycle.control import ModelControl
from service.lifecycle.errors import (
    ControlDisabled,
    DefaultModelRequired,
    LoadFailed,
    NoSuchModel,
    RepositoryError,
)
from service.lifecycle.index import State
from service.lifecycle.scan import Candidate, Scanner

__all__ = [
    "Candidate",
    "ControlDisabled",
    "DefaultModelRequired",
    "LoadFailed",
    "ModelControl",
    "NoSuchModel",
    "RepositoryError",
    "Scanner",
    "State",
]
