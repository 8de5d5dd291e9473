"""Readers on shards written by the real img2dataset 1.47 (all four output formats) and Hugging Face
datasets: the same images come out of every format, img2dataset's failed URLs are accounted for,
its stats are checked, and tampered folders are caught."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import IMG2DATASET, IMG2DATASET_FORMATS
from vesl.config import ReadConfig
from vesl.io.inputs import discover_inputs
from vesl.io.readers import read_shard
from vesl.io.tfrecord import frame_record
from vesl.records import ImageRecord, InputShard, Reason, Reject, SourceCheck

CFG = ReadConfig()
PHOTOS = Path(__file__).resolve().parents[2] / "sample" / "photos"  # what the fixture server served
URLS = json.loads((IMG2DATASET / "urls.json").read_text())  # what img2dataset was asked to download


def read_folder(folder: Path | str) -> tuple[list[ImageRecord], list[Reject], list[SourceCheck]]:
    records, rejects, checks = [], [], []
    for shard in discover_inputs([str(folder)]).shards:
        for item in read_shard(shard, CFG):
            {ImageRecord: records, Reject: rejects, SourceCheck: checks}[type(item)].append(item)
    return records, rejects, checks


def metadata_rows() -> list[dict]:
    rows = []
    for path in sorted((IMG2DATASET / "webdataset").glob("*.parquet")):
        rows += pq.read_table(path, columns=["key", "url", "caption", "status", "error_message", "sha256"]).to_pylist()
    return rows


@pytest.mark.parametrize("fmt", IMG2DATASET_FORMATS)
def test_every_format_yields_img2dataset_s_images_and_accounts_for_every_url(fmt):
    records, rejects, checks = read_folder(IMG2DATASET / fmt)
    meta = {row["key"]: row for row in metadata_rows()}
    # Every URL img2dataset tried is read once: a record or a reject (read = URLs tried).
    assert len(records) + len(rejects) == len(URLS) == len(meta)
    assert sorted([r.key for r in records] + [r.key for r in rejects]) == sorted(meta)
    # The images are the ones img2dataset stored (its files layout on disk is the reference: the
    # resize is deterministic), of the photos it downloaded (its sha256 is of the downloaded bytes),
    # with its captions and URLs.
    stored = {p.stem: p.read_bytes() for p in (IMG2DATASET / "files").glob("*/*.jpg")}
    assert len(records) == len(stored) - 1  # the one with an empty caption is rejected
    for record in records:
        row = meta[record.key]
        assert row["status"] == "success" and record.image_bytes == stored[record.key]
        photo = PHOTOS / row["url"].rsplit("/", 1)[-1]
        assert hashlib.sha256(photo.read_bytes()).hexdigest() == row["sha256"]
        assert (record.caption, record.url) == (row["caption"], row["url"])
    # Failed URLs carry img2dataset's status and error message, and the URL.
    failed = {r.key: r for r in rejects if r.reason in (Reason.FAILED_TO_DOWNLOAD, Reason.FAILED_TO_RESIZE)}
    assert {k: r.reason for k, r in failed.items()} == {
        k: row["status"] for k, row in meta.items() if row["status"] != "success"
    }
    for key, reject in failed.items():
        assert reject.detail == f"img2dataset {meta[key]['status']}: {meta[key]['error_message']}"
        assert reject.url == meta[key]["url"] and reject.stage == "read"
    assert Counter(r.reason for r in rejects if r.key not in failed) == {Reason.EMPTY_CAPTION: 1}
    # img2dataset's stats agree with what was read.
    assert [c.problems for c in checks] == [(), (), ()]
    assert sum(c.tried for c in checks) == len(URLS) and sum(c.failed for c in checks) == len(failed)
    assert all(c.expected is not None for c in checks)


def test_hugging_face_image_structs():
    records, rejects, checks = read_folder(IMG2DATASET / "hf")
    table = pq.read_table(IMG2DATASET / "hf" / "train.parquet")
    assert table.schema.field("image").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    rows = {row["id"]: row for row in table.to_pylist()}
    assert {r.key: r.caption for r in records} == {k: row["text"] for k, row in rows.items() if row["text"]}
    assert all(r.image_bytes == rows[r.key]["image"]["bytes"] for r in records)
    assert [(r.key, r.reason) for r in rejects] == [(k, Reason.EMPTY_CAPTION) for k, r in rows.items() if not r["text"]]
    assert checks == []  # no img2dataset bookkeeping to check


def test_image_struct_without_bytes_is_rejected_naming_the_path(tmp_path):
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "picture": pa.array([{"bytes": b"\xff\xd8", "path": "a.jpg"}, {"bytes": None, "path": "/x/b.jpg"}], image),
            "text": ["a cat", "a dog"],
        }
    )
    path = str(tmp_path / "t.parquet")
    pq.write_table(table, path)  # no HF metadata: found by its struct type
    first, second = read_shard(path, CFG)
    assert isinstance(first, ImageRecord) and first.image_bytes == b"\xff\xd8" and first.caption == "a cat"
    assert second.reason == Reason.MISSING_IMAGE and "'/x/b.jpg' is not embedded" in second.detail


def test_hugging_face_metadata_names_the_image_column(tmp_path):
    table = pq.read_table(IMG2DATASET / "hf" / "train.parquet")
    meta = json.loads(table.schema.metadata[b"huggingface"])
    meta["info"]["features"]["photo"] = meta["info"]["features"].pop("image")
    renamed = table.rename_columns(["photo", "text", "id"]).append_column("jpg", pa.array([b"thumbnail"] * len(table)))
    path = str(tmp_path / "renamed.parquet")
    pq.write_table(renamed.replace_schema_metadata({b"huggingface": json.dumps(meta).encode()}), path)
    records = [i for i in read_shard(path, CFG) if isinstance(i, ImageRecord)]
    assert len(records) == 8 and all(r.image_bytes[:2] == b"\xff\xd8" for r in records)  # not the decoy jpg


def copy_fixture(fmt: str, tmp_path: Path) -> Path:
    target = tmp_path / fmt
    shutil.copytree(IMG2DATASET / fmt, target)
    return target


def problems(folder: Path) -> list[str]:
    return [p for c in read_folder(folder)[2] for p in c.problems]


def test_an_image_lost_from_a_shard_is_a_reject_and_a_problem(tmp_path):
    folder = copy_fixture("webdataset", tmp_path)
    tar_path = folder / "00000.tar"
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    lost = members[0][0].name.split(".")[0]
    with tarfile.open(tar_path, "w") as tar:
        for member, data in members:
            if not member.name.startswith(lost + "."):
                tar.addfile(member, io.BytesIO(data))
    records, rejects, checks = read_folder(folder)
    missing = [r for r in rejects if r.reason == Reason.MISSING_FROM_SHARD]
    assert [r.key for r in missing] == [lost] and missing[0].url
    assert len(records) + len(rejects) == len(URLS)  # still every URL
    assert "1 URLs marked downloaded are missing from the shard" in checks[0].problems
    assert "img2dataset stored 4 images, the shard holds 3" in checks[0].problems


def test_stats_that_disagree_or_are_missing_are_problems(tmp_path):
    folder = copy_fixture("tfrecord", tmp_path)
    stats = json.loads((folder / "00001_stats.json").read_text())
    stats["count"] += 2
    (folder / "00001_stats.json").write_text(json.dumps(stats))
    (folder / "00002_stats.json").unlink()
    (folder / "00000_stats.json").write_text("{not json")
    found = problems(folder)
    assert any(p.startswith("unreadable img2dataset stats") for p in found)
    assert "img2dataset tried 7 URLs, VESL accounts for 5" in found
    assert "img2dataset tried 7 URLs, its metadata lists 5" in found
    # 00002 has no stats any more: the folder is still img2dataset's (the other shards say so)
    assert any("no _stats.json" in p for p in found)


def test_unreadable_metadata_is_a_problem_not_a_crash(tmp_path):
    folder = copy_fixture("files", tmp_path)
    (folder / "00001.parquet").write_bytes(b"not parquet")
    records, rejects, checks = read_folder(folder)
    assert any("metadata" in p and "unreadable" in p for p in checks[1].problems)
    assert len(records) == 8  # the images are all still read
    assert len(records) + len(rejects) == len(URLS) - 1  # shard 1's failed URL is unknowable: said above


def test_records_not_in_the_metadata_are_counted(tmp_path):
    folder = copy_fixture("files", tmp_path)
    shutil.copy(folder / "00000" / "000000.jpg", folder / "00000" / "extra.jpg")
    (folder / "00000" / "extra.txt").write_text("an extra photo")
    assert "1 records of the shard are not in its metadata" in problems(folder)


def test_files_shard_reads_one_record_at_a_time_in_key_order(tmp_path):
    folder = copy_fixture("files", tmp_path)
    (folder / "00000" / "000001.txt").unlink()
    shard = discover_inputs([str(folder)]).shards[0]
    items = list(read_shard(shard, CFG))
    keys = [i.key for i in items if not isinstance(i, SourceCheck)]
    assert keys[:4] == sorted(keys[:4])
    missing = next(i for i in items if getattr(i, "key", None) == "000001")
    assert missing.reason == Reason.MISSING_CAPTION and "members found: jpg, json" in missing.detail


def tfrecord_shard(tmp_path: Path, data: bytes, name: str = "t.tfrecord") -> InputShard:
    path = tmp_path / name
    path.write_bytes(data)
    return InputShard(str(path), "tfrecord")


def test_tfrecord_damage(tmp_path):
    data = (IMG2DATASET / "tfrecord" / "00000.tfrecord").read_bytes()
    whole = [i for i in read_shard(InputShard(str(IMG2DATASET / "tfrecord" / "00000.tfrecord"), "tfrecord"), CFG)]
    assert len(whole) == 4
    # gzip: the same records
    gz = [i.key for i in read_shard(tfrecord_shard(tmp_path, gzip.compress(data), "t.tfrecord.gz"), CFG)]
    assert gz == [i.key for i in whole]
    # cut inside the third record: two records, then truncated_shard
    cut = list(read_shard(tfrecord_shard(tmp_path, data[: len(data) * 2 // 3]), CFG))
    assert [type(i) for i in cut[:-1]] == [ImageRecord] * (len(cut) - 1)
    assert cut[-1].reason == Reason.TRUNCATED_SHARD and "earlier records were read" in cut[-1].detail
    # a flipped byte in the first record's data: its CRC fails inside a sound frame, so that record
    # alone is lost and the three after it are read
    flipped = bytearray(data)
    flipped[40] ^= 0xFF
    bad, *rest = read_shard(tfrecord_shard(tmp_path, bytes(flipped)), CFG)
    assert bad.reason == Reason.UNREADABLE_RECORD and "fails its data CRC" in bad.detail and bad.index == 0
    assert [i.key for i in rest] == [i.key for i in whole[1:]] and [i.index for i in rest] == [1, 2, 3]
    # a flipped byte in a length field: the framing itself is gone from there on
    flipped = bytearray(data)
    flipped[2] ^= 0xFF
    (bad,) = read_shard(tfrecord_shard(tmp_path, bytes(flipped)), CFG)
    assert bad.reason == Reason.UNREADABLE_SHARD and "length CRC" in bad.detail
    # a sound frame around bytes that are no Example: that record only
    items = list(read_shard(tfrecord_shard(tmp_path, frame_record(b"\xff\xff\xff") + data), CFG))
    assert items[0].reason == Reason.UNREADABLE_RECORD and [i.key for i in items[1:]] == [i.key for i in whole]


class CountingFile(io.BytesIO):
    def read(self, size=-1):
        data = super().read(size)
        CountingMemoryFS.current.bytes_read += len(data)
        return data


class CountingMemoryFS:
    """fsspec's memory filesystem, counting the bytes handed out and the files opened."""

    @staticmethod
    def register():
        import fsspec
        from fsspec.implementations.memory import MemoryFileSystem

        class Counting(MemoryFileSystem):
            protocol = "counting"
            bytes_read = 0
            opened: list[str] = []  # noqa: RUF012

            @classmethod
            def _strip_protocol(cls, path):
                path = path[len("counting://") :] if path.startswith("counting://") else path
                return MemoryFileSystem._strip_protocol(path)

            def _open(self, path, mode="rb", **kwargs):
                if mode != "rb":
                    return super()._open(path, mode, **kwargs)
                Counting.opened.append(path)
                # a fresh counting handle (memory's own handle is the stored object, shared by every open)
                return CountingFile(MemoryFileSystem.cat_file(self, path))

            def cat_file(self, path, start=None, end=None, **kwargs):
                data = super().cat_file(path, start, end, **kwargs)
                Counting.opened.append(path)
                Counting.bytes_read += len(data)
                return data

        fsspec.register_implementation("counting", Counting, clobber=True)
        CountingMemoryFS.current = Counting
        return Counting


@pytest.mark.parametrize("fmt", IMG2DATASET_FORMATS)
def test_remote_folders_read_the_same(fmt):
    fs_class = CountingMemoryFS.register()
    fs = fs_class()
    root = IMG2DATASET / fmt
    for path in root.rglob("*"):
        if path.is_file():
            fs.pipe(f"/bucket/{fmt}/{path.relative_to(root).as_posix()}", path.read_bytes())
    try:
        local = read_folder(root)
        remote = read_folder(f"counting://bucket/{fmt}")
        assert [(r.key, r.caption, r.image_bytes) for r in remote[0]] == [
            (r.key, r.caption, r.image_bytes) for r in local[0]
        ]
        assert [(r.key, r.reason, r.url) for r in remote[1]] == [(r.key, r.reason, r.url) for r in local[1]]
        assert [c.problems for c in remote[2]] == [(), (), ()]
    finally:
        fs.rm("/bucket", recursive=True)


def _big_shard(fmt: str, fs) -> str:
    """A shard of many records built from the fixtures' (a few MB), in the bucket."""
    records = read_folder(IMG2DATASET / "webdataset")[0]
    if fmt == "tfrecord":
        data = (IMG2DATASET / "tfrecord" / "00000.tfrecord").read_bytes() * 100
        fs.pipe("/bucket/big.tfrecord", data)
        return "counting://bucket/big.tfrecord"
    if fmt == "parquet":
        table = pq.read_table(IMG2DATASET / "parquet" / "00000.parquet")
        sink = pa.BufferOutputStream()
        pq.write_table(
            pa.concat_tables([table] * 150), sink, row_group_size=100, use_dictionary=False, compression="none"
        )
        fs.pipe("/bucket/big.parquet", sink.getvalue().to_pybytes())
        return "counting://bucket/big.parquet"
    if fmt == "webdataset":
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for i in range(400):
                r = records[i % len(records)]
                for ext, data in (("jpg", r.image_bytes), ("txt", r.caption.encode())):
                    info = tarfile.TarInfo(f"{i:06d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        fs.pipe("/bucket/big.tar", buffer.getvalue())
        return "counting://bucket/big.tar"
    for i in range(400):  # files
        r = records[i % len(records)]
        fs.pipe(f"/bucket/big/{i:06d}.jpg", r.image_bytes)
        fs.pipe(f"/bucket/big/{i:06d}.txt", r.caption.encode())
    return "counting://bucket/big"


@pytest.mark.parametrize("fmt", IMG2DATASET_FORMATS)
def test_shards_stream_one_record_at_a_time(fmt):
    fs_class = CountingMemoryFS.register()
    fs = fs_class()
    try:
        path = _big_shard(fmt, fs)
        total = sum(fs.du(p) for p in fs.find(path.replace("counting://", "/"))) if fmt == "files" else fs.size(path)
        fs_class.bytes_read, fs_class.opened = 0, []
        first = next(iter(read_shard(InputShard(path, fmt), CFG)))
        assert isinstance(first, ImageRecord) and total > 1_500_000
        # one record (plus read-ahead); a parquet reader holds one row group (of 8 here)
        limit = total // 4 if fmt == "parquet" else 64 * 1024
        assert fs_class.bytes_read < limit
        if fmt == "files":
            assert len(fs_class.opened) == 2  # that record's image and caption
    finally:
        fs.rm("/bucket", recursive=True)
