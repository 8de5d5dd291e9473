"""Build the bundled sample shards from the photos in ``sample/photos`` (public domain / CC0
scikit-image photos with CLIP's captions; see sample/photos/LICENSE.md).

    python -m vesl.sample OUT_DIR [--photos sample/photos]

Writes three shards, one per reader, plus a few broken records so a run shows rejects:
- sample-00000.tar      webdataset (img2dataset layout): 4 photos
- sample-00001.parquet  img2dataset parquet: 4 photos
- sample-00002.tar      webdataset with an EXIF-rotated photo, a caption with no noun phrase, and bad
                        records: corrupt image bytes, an empty caption, a key already in shard 0
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

from PIL import Image

from vesl.io.shard_writers import RawSample, write_img2dataset_parquet, write_webdataset

DEFAULT_PHOTOS = Path(__file__).resolve().parent.parent / "sample" / "photos"


def load_photos(photos: Path) -> list[RawSample]:
    samples = []
    for line in (photos / "manifest.jsonl").read_text().splitlines():
        entry = json.loads(line)
        name = entry["image"]
        samples.append(
            RawSample(
                key=Path(name).stem,
                image=(photos / name).read_bytes(),
                caption=entry["captions"][0],
                image_ext=Path(name).suffix.lstrip("."),
                meta={"url": f"https://example.invalid/skimage/{name}", "source": entry.get("source", "")},
            )
        )
    return samples


def exif_rotated_jpeg(data: bytes, orientation: int = 6) -> bytes:
    """The same photo stored rotated with an EXIF Orientation tag (6: display rotated 90° clockwise)."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    stored = image.transpose(Image.Transpose.ROTATE_90)  # what a camera writes for orientation 6
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    stored.save(out, "JPEG", quality=90, exif=exif.tobytes())
    return out.getvalue()


def build_sample(out_dir: str | Path, photos: Path = DEFAULT_PHOTOS) -> list[str]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = load_photos(photos)
    by_key = {s.key: s for s in samples}
    first, second = samples[:4], samples[4:]
    rocket = by_key["rocket"]
    extras = [
        RawSample("rocket_exif_rotated", exif_rotated_jpeg(rocket.image), rocket.caption, "jpg"),
        RawSample("no_noun_phrase", by_key["coffee"].image, "it is what it is", "png"),
        RawSample("corrupt_image", b"\xff\xd8\xff\xe0 this is not a jpeg", "a dog on a beach"),
        RawSample("empty_caption", by_key["chelsea"].image, "   ", "png"),
        RawSample(first[0].key, first[0].image, "a duplicate of a record in shard 0", first[0].image_ext),
    ]
    return [
        write_webdataset(str(out / "sample-00000.tar"), first),
        write_img2dataset_parquet(str(out / "sample-00001.parquet"), second),
        write_webdataset(str(out / "sample-00002.tar"), extras),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    args = parser.parse_args(argv)
    for path in build_sample(args.out_dir, args.photos):
        print(path)


if __name__ == "__main__":
    main()
