"""The repository index: one entry per model version, in Triton's words.

`POST /v2/repository/index` answers these entries as they are
(`{"name", "version", "state", "reason"}`), so an operator sees a version
still being copied, or a corrupt one, with the reason it is not served.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """Triton's model states."""

    READY = "READY"  # served
    LOADING = "LOADING"  # verified, session being created or warmed up
    UNLOADING = "UNLOADING"  # no longer handed out; queued work finishing
    UNAVAILABLE = "UNAVAILABLE"  # on disk but not served; `reason` says why


class Index:
    """(name, version) -> state and reason; changed only on the event loop."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[State, str]] = {}

    def set(self, name: str, version: str, state: State, reason: str = "") -> None:
        self._entries[(name, version)] = (state, reason)

    def drop(self, name: str, version: str) -> None:
        self._entries.pop((name, version), None)

    def versions(self) -> list[tuple[str, str]]:
        return list(self._entries)

    def state(self, name: str, version: str) -> State | None:
        entry = self._entries.get((name, version))
        return entry[0] if entry else None

    def entries(self, *, ready_only: bool = False) -> list[dict[str, str]]:
        """Sorted by name, then numeric version."""
        out = []
        for (name, version), (state, reason) in sorted(
            self._entries.items(), key=lambda kv: (kv[0][0], int(kv[0][1]))
        ):
            if ready_only and state is not State.READY:
                continue
            out.append({"name": name, "version": version, "state": str(state), "reason": reason})
        return out

    def of(self, name: str) -> list[dict[str, str]]:
        return [e for e in self.entries() if e["name"] == name]
