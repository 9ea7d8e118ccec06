"""Rows of several requests as one model call: pack (and pad), check, slice back.

Plain numpy: no asyncio, no model. The batcher (service/batcher.py) decides
which parts go together and when; this only does the arithmetic (and keeps the
arrays it packs into, one per inference thread).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

Outputs = dict[str, np.ndarray]


class Batch:
    """Parts (each N_i x ...) run as one array of `size` >= sum(N_i) rows; the rest is zeros."""

    def __init__(self, parts: Sequence[np.ndarray], size: int | None = None) -> None:
        self.parts = parts
        self.rows = sum(len(p) for p in parts)
        self.size = self.rows if size is None else size
        if self.size < self.rows:
            raise ValueError(f"cannot pad {self.rows} rows to {self.size}")

    @property
    def padding(self) -> int:
        return self.size - self.rows

    def pack(self, buffers: PackBuffers | None = None) -> np.ndarray:
        """The parts' rows in order, then zero rows up to `size`: one copy at most.

        Runs in the inference thread, not on the event loop: a batch of large
        images is tens of megabytes to copy. With `buffers` the rows go into this
        thread's reused array (valid until its next pack). ValueError when the
        parts' shapes differ.
        """
        if len(self.parts) == 1 and self.size == self.rows:
            return self.parts[0]
        first = self.parts[0]
        if buffers is None:
            batch = np.empty((self.size, *first.shape[1:]), dtype=first.dtype)
        else:
            batch = buffers.get(self.size, first.shape[1:], first.dtype)
        np.concatenate(self.parts, out=batch[: self.rows])
        batch[self.rows :] = 0
        return batch

    def check(self, result: Outputs) -> None:
        """Every output has one row per packed row; RuntimeError otherwise."""
        for name, value in result.items():
            if len(value) != self.size:
                raise RuntimeError(f"output {name!r} has {len(value)} rows for {self.size}")

    def split(self, result: Outputs, wanted: Sequence[Sequence[str]]) -> list[Outputs]:
        """Each part's rows of the outputs it asked for (views, no copies); padding dropped."""
        answers, offset = [], 0
        for part, names in zip(self.parts, wanted, strict=True):
            n = len(part)
            answers.append({name: result[name][offset : offset + n] for name in names})
            offset += n
        return answers


class PackBuffers:
    """Arrays to pack batches into, one per thread and row shape, reused batch after batch.

    A fresh array for every batch of a few MiB is a fresh mapping (service/memory.py
    keeps blocks over 4 MiB out of malloc's heap): the course CNN's batch of 32
    (8 MiB) took 2,000 page faults, and the inference thread spent as long packing
    as running the model (py-spy). Each thread's array grows to the largest batch
    it packed and lives as long as this object (the model version's batcher).
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, rows: int, row_shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """`rows` x `row_shape` of this thread's array (contents undefined)."""
        arrays: dict = self._local.__dict__.setdefault("arrays", {})
        key = (tuple(row_shape), np.dtype(dtype))
        array = arrays.get(key)
        if array is None or len(array) < rows:
            array = arrays[key] = np.empty((rows, *row_shape), dtype=dtype)
        return array[:rows]


def chunks(array: np.ndarray, max_rows: int) -> list[np.ndarray]:
    """`array` in pieces of at most `max_rows` rows (views), in order."""
    return [array[i : i + max_rows] for i in range(0, len(array), max_rows)]


def join(answers: Sequence[Outputs]) -> Outputs:
    """The chunks' answers back in one piece, in order."""
    if len(answers) == 1:
        return answers[0]
    return {name: np.concatenate([a[name] for a in answers]) for name in answers[0]}
