"""What an upload may cost to decode, checked on its bytes before any decoder runs.

The pixel count (read from the header) bounds an image's memory, not its CPU:
a small file can still make a decoder loop for seconds. Two such shapes exist
in the formats the server takes, and both are refused from a byte scan that
costs microseconds:

- a progressive JPEG with hundreds of scans: each scan is a pass over every
  coefficient block (a 72 KiB 4000x4000 file with 300 extra scans took 2.3 s of
  CPU here); legitimate files have 6-12 scans (an MPO photo pair about twice that);
- a PNG with a flood of chunks: Pillow handles each chunk in Python (~13 us), so
  100,000 empty chunks in 1.2 MiB took 0.4-1.3 s; encoders write 8-64 KiB IDAT
  chunks, so a few dozen chunks plus one per 8 KiB is plenty.

Also the default pixel cap, derived from the model's input size, and the cap on
the default number of decode threads: together they bound decoding's memory.
What the event loop itself may decode (`cheap_to_decode`) is stricter still: it
cannot be abandoned at a deadline, and every other request waits for it.
"""

from __future__ import annotations

import numpy as np

JPEG_MAX_SCANS = 64
# On the event loop only JPEGs with at most this many scans (encoders write 1 baseline,
# 6-12 progressive): 60 scans of a 1 MP image took 30 ms here, 10 scans 3.6 ms.
LOOP_MAX_SCANS = 16
PNG_MAX_CHUNKS_BASE = 64
PNG_BYTES_PER_CHUNK = 8192

# Pixel cap when `max_image_pixels` is 0 (auto): this many times the model's input,
# within [floor, ceiling]. 256x is a 16x downscale per side: a 12 MP phone photo
# for a 224x224 model; the floor keeps ordinary photos usable with tiny models.
PIXELS_PER_INPUT_PIXEL = 256
AUTO_PIXELS_FLOOR = 4 * 1024 * 1024
AUTO_PIXELS_CEILING = 40_000_000

# Default decode threads are one per CPU plus one, but never more than this: each
# thread can hold one image at the pixel cap (~4 bytes a pixel, twice over while it
# converts), so on a 64-core node 65 threads x 40 MP would be ~20 GiB.
MAX_DEFAULT_DECODE_THREADS = 8

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def too_costly(data: bytes) -> str | None:
    """Why decoding `data` would cost far more than its size suggests, or None."""
    if data.startswith(b"\xff\xd8"):
        # the scans a decoder goes through: one for a single-scan sequential file, else
        # the SOS markers (0xFF in entropy-coded data is always followed by 0x00 or a
        # restart marker, so FF DA only starts a scan or sits in an APP payload: a
        # slight over-count, well inside the limit)
        scans = jpeg_scans(data)
        if scans > JPEG_MAX_SCANS:
            return f"the JPEG has {scans} scans; the limit is {JPEG_MAX_SCANS}"
    elif data.startswith(_PNG_SIGNATURE):
        limit = PNG_MAX_CHUNKS_BASE + len(data) // PNG_BYTES_PER_CHUNK
        if _png_chunks(data, limit + 1) > limit:
            return f"the PNG has more than {limit} chunks for {len(data)} bytes"
    return None


def cheap_to_decode(data: bytes) -> bool:
    """Whether `data` (within the on-loop byte and pixel caps) decodes in a few
    milliseconds: not a JPEG with more than LOOP_MAX_SCANS scans. PNG chunk floods
    are refused by `too_costly` before any decoder runs."""
    return not data.startswith(b"\xff\xd8") or jpeg_scans(data) <= LOOP_MAX_SCANS


def jpeg_scans(data: bytes) -> int:
    """How many scans a decoder will go through for `data` (a JPEG).

    A sequential Huffman JPEG (SOF0/SOF1) whose first scan holds every component
    is read in one scan: libjpeg stops at a second SOS with an error
    (`has_multiple_scans` is false: jdinput.c), so that file is 1 from its header
    (~5 us of walking a dozen segments), whatever bytes follow. Any other JPEG
    (progressive, non-interleaved, arithmetic, or headers this walk gives up on)
    counts its FF DA markers (`count_sos_markers`).

    An upload decoded on the event loop is asked twice (`cheap_to_decode`, then
    `too_costly`): the last answer is kept, for that same bytes object (held, so
    its identity cannot be reused meanwhile).
    """
    global _last_scanned
    last = _last_scanned
    if last[0] is data:
        return last[1]
    scans = 1 if _single_scan(data) else count_sos_markers(data)
    _last_scanned = (data, scans)
    return scans


_last_scanned: tuple[bytes, int] = (b"", 0)


_SEQUENTIAL_HUFFMAN = (0xC0, 0xC1)  # SOF0 baseline, SOF1 extended sequential
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # DHT, JPG and DAC are not frames
_MAX_SEGMENTS = 64  # headers of ordinary files have a dozen; more: count the markers


def _single_scan(data: bytes) -> bool:
    """Whether the header says one interleaved sequential Huffman scan (see jpeg_scans)."""
    pos, end, frame, components = 2, len(data), 0, -1
    for _ in range(_MAX_SEGMENTS):
        if pos + 4 > end or data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte before the marker
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _SOF:
            if frame or pos + 10 > end:
                return False
            frame, components = marker, data[pos + 9]
        elif marker == 0xDA:
            return frame in _SEQUENTIAL_HUFFMAN and pos + 5 <= end and data[pos + 4] == components
        elif 0xD0 <= marker <= 0xD9 or marker == 0x01:  # no length: not in a valid header
            return False
        pos += 2 + length
    return False


def count_sos_markers(data: bytes) -> int:
    """How many FF DA (start of scan) markers `data` holds.

    numpy, not `data.count(b"\\xff\\xda")`: on a 100 KB photo 21 us instead of 113,
    with the GIL held either way.
    """
    octets = np.frombuffer(data, dtype=np.uint8)
    return int(np.count_nonzero((octets[:-1] == 0xFF) & (octets[1:] == 0xDA)))


def _png_chunks(data: bytes, stop: int) -> int:
    """Chunks up to IEND, the end of the data, or `stop` (whichever comes first)."""
    count, pos, end = 0, len(_PNG_SIGNATURE), len(data)
    while pos + 8 <= end and count < stop:
        count += 1
        if data[pos + 4 : pos + 8] == b"IEND":
            break
        pos += 12 + int.from_bytes(data[pos : pos + 4], "big")
    return count


def auto_max_pixels(input_height: int, input_width: int) -> int:
    """The default pixel cap for a model with this input size."""
    wanted = PIXELS_PER_INPUT_PIXEL * input_height * input_width
    return max(AUTO_PIXELS_FLOOR, min(AUTO_PIXELS_CEILING, wanted))
