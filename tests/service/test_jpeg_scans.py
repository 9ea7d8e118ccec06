"""How many scans a JPEG costs: one from the header for a single-scan sequential file,
the FF DA markers counted for everything else."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from benchmarks.photo import PHOTO as PHOTO_PATH
from service import image_limits
from service.image_limits import LOOP_MAX_SCANS, count_sos_markers, jpeg_scans, too_costly

PHOTO = PHOTO_PATH.read_bytes()


def _jpeg(mode: str = "L", side: int = 64, **options: object) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (side, side), 128 if mode == "L" else None).save(buf, "JPEG", **options)
    return buf.getvalue()


def _scan_repeated(data: bytes, times: int) -> bytes:
    start, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    return data[:end] + data[start:end] * times + data[end:]


@pytest.mark.parametrize("mode", ["L", "RGB", "CMYK"])
def test_a_baseline_jpeg_is_one_scan_from_its_header(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_count(data: bytes) -> int:
        raise AssertionError("counted the markers")

    monkeypatch.setattr(image_limits, "count_sos_markers", no_count)
    assert jpeg_scans(_jpeg(mode)) == 1
    assert jpeg_scans(PHOTO) == 1


def test_repeated_scans_after_a_single_scan_header_are_never_decoded() -> None:
    """Why the header may answer: libjpeg stops at the second SOS of such a file."""
    bomb = _scan_repeated(_jpeg(side=2048, quality=50), 300)
    assert count_sos_markers(bomb) == 301 and jpeg_scans(bomb) == 1
    start = time.process_time()
    with pytest.raises(OSError):
        Image.open(io.BytesIO(bomb)).load()
    assert time.process_time() - start < 0.5


def test_progressive_files_are_counted() -> None:
    progressive = _jpeg(side=256, progressive=True)
    assert jpeg_scans(progressive) == count_sos_markers(progressive) > 1
    bomb = _scan_repeated(progressive, 100)
    assert jpeg_scans(bomb) == count_sos_markers(bomb) > LOOP_MAX_SCANS
    assert too_costly(bomb) is not None


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d[:2] + b"\xff\xe1\x00\x04ab" * 80 + d[2:],  # more segments than walked
        lambda d: d[:20],  # cut inside the header
        lambda d: d[:2] + b"\x00\x00" + d[2:],  # not a marker where one belongs
        lambda d: d.replace(b"\xff\xc0", b"\xff\xc9", 1),  # arithmetic coding
    ],
    ids=["many segments", "truncated", "garbage", "arithmetic"],
)
def test_unusual_headers_are_counted(damage) -> None:
    data = damage(_scan_repeated(_jpeg(), 40))
    assert jpeg_scans(data) == count_sos_markers(data)
