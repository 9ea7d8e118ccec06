"""Batch on its own: packing, padding and slicing with numpy alone."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from service.batch import Batch, PackBuffers, chunks, join


def _rows(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32).reshape(n, 1)


def test_one_part_without_padding_is_not_copied() -> None:
    part = _rows(0, 3)
    assert Batch([part]).pack() is part


def test_parts_are_packed_in_order_and_padded_with_zeros() -> None:
    batch = Batch([_rows(1, 2), _rows(3, 1)], size=4)
    assert batch.rows == 3 and batch.padding == 1
    np.testing.assert_array_equal(batch.pack()[:, 0], [1, 2, 3, 0])


def test_split_gives_each_part_its_rows_and_outputs_and_drops_padding() -> None:
    batch = Batch([_rows(1, 2), _rows(3, 1)], size=4)
    result = {"y": batch.pack() * 2, "z": batch.pack() + 1}
    first, second = batch.split(result, [["y"], ["y", "z"]])
    assert set(first) == {"y"} and set(second) == {"y", "z"}
    np.testing.assert_array_equal(first["y"][:, 0], [2, 4])
    np.testing.assert_array_equal(second["z"][:, 0], [4])


def test_pack_buffers_are_reused_within_a_thread_and_never_shared_between_threads() -> None:
    buffers = PackBuffers()
    first = Batch([_rows(1, 2), _rows(3, 1)], size=4).pack(buffers)
    second = Batch([_rows(5, 1), _rows(6, 1)]).pack(buffers)  # smaller: same memory
    assert np.shares_memory(first, second)
    np.testing.assert_array_equal(second[:, 0], [5, 6])
    bigger = Batch([_rows(0, 3), _rows(3, 3)]).pack(buffers)
    np.testing.assert_array_equal(bigger[:, 0], np.arange(6))
    other: list[np.ndarray] = []
    thread = threading.Thread(target=lambda: other.append(Batch([_rows(0, 1)] * 2).pack(buffers)))
    thread.start()
    thread.join()
    assert not np.shares_memory(other[0], bigger)


def test_wrong_shapes_and_wrong_row_counts_are_errors() -> None:
    with pytest.raises(ValueError):
        Batch([_rows(0, 1), np.ones((1, 3), np.float32)]).pack()
    with pytest.raises(ValueError):
        Batch([_rows(0, 3)], size=2)
    with pytest.raises(RuntimeError, match="rows"):
        Batch([_rows(0, 3)]).check({"y": _rows(0, 2)})


def test_chunks_and_join_round_trip() -> None:
    array = _rows(0, 10)
    parts = chunks(array, 4)
    assert [len(p) for p in parts] == [4, 4, 2]
    np.testing.assert_array_equal(join([{"y": p} for p in parts])["y"], array)
