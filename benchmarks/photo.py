"""The benchmark's "real photograph": a 640x480 JPEG made from scikit-learn's china.jpg.

A photo (not noise, not a flat colour) so JPEG decoding costs what it costs in
production. The committed `benchmarks/data/photo-640x480.jpg` was made by
`python -m benchmarks.photo`; the GPU machine has no scikit-learn, so the file
is shipped rather than rebuilt. china.jpg is CC-BY 2.0, danielbuechele on Flickr.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

PHOTO = Path(__file__).resolve().parent / "data" / "photo-640x480.jpg"
SIZE = (640, 480)


def make_photo(out: Path = PHOTO, quality: int = 90) -> Path:
    """Scale china.jpg (640x427) to 480 rows, centre-crop to 640 columns, save as JPEG."""
    import sklearn.datasets  # only needed to rebuild the committed file

    source = Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"
    with Image.open(source) as img:
        img = img.convert("RGB")
        scale = SIZE[1] / img.height
        img = img.resize((round(img.width * scale), SIZE[1]), Image.Resampling.LANCZOS)
        left = (img.width - SIZE[0]) // 2
        img = img.crop((left, 0, left + SIZE[0], SIZE[1]))
        out.parent.mkdir(parents=True, exist_ok=True)
        img.save(out, format="JPEG", quality=quality)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=PHOTO)
    args = parser.parse_args()
    path = make_photo(args.out)
    print(f"{path}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
