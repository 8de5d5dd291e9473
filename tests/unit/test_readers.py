"""Shard readers: the three formats, streaming, and every malformed record or shard."""

from __future__ import annotations

import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vesl.config import ReadConfig
from vesl.io.readers import SHARD_INDEX, read_shard
from vesl.io.shard_writers import RawSample, write_img2dataset_parquet, write_webdataset
from vesl.records import ImageRecord, Reason, Reject, Stage

CFG = ReadConfig(max_caption_chars=1000)


def split(items):
    records = [i for i in items if isinstance(i, ImageRecord)]
    rejects = {r.key: r for r in items if isinstance(r, Reject)}
    return records, rejects


def test_webdataset_reads_groups_in_order(tmp_path, photo_samples):
    path = write_webdataset(str(tmp_path / "a.tar"), photo_samples)
    records, rejects = split(list(read_shard(path, CFG)))
    assert not rejects
    assert [(r.key, r.index, r.caption) for r in records] == [
        (s.key, i, s.caption) for i, s in enumerate(photo_samples)
    ]
    assert records[0].image_bytes == photo_samples[0].image and records[0].shard == path


def test_webdataset_bad_records(tmp_path, photo_samples):
    image = photo_samples[0].image
    samples = [
        RawSample("no_caption", image, None),
        RawSample("no_image", None, "a cat"),
        RawSample("empty", image, ""),
        RawSample("blank", image, " \t\n "),
        RawSample("latin1", image, "caf\xe9 au lait".encode("latin-1")),
        RawSample("huge", image, "a cat " * 20_000),
        RawSample("bom", image, "\ufeffa cat on a mat".encode("utf-8")),
        RawSample("zero_bytes", b"", "a dog"),  # passes the reader; decode rejects it
        RawSample("ok", image, "  a dog on a mat  ", meta={"url": "https://x.invalid/1.jpg"}),
    ]
    records, rejects = split(list(read_shard(write_webdataset(str(tmp_path / "b.tar"), samples), CFG)))
    assert {k: r.reason for k, r in rejects.items()} == {
        "no_caption": Reason.MISSING_CAPTION,
        "no_image": Reason.MISSING_IMAGE,
        "empty": Reason.EMPTY_CAPTION,
        "blank": Reason.EMPTY_CAPTION,
        "latin1": Reason.CAPTION_NOT_UTF8,
        "huge": Reason.CAPTION_TOO_LONG,
    }
    assert all(r.stage == Stage.READ and r.detail for r in rejects.values())
    assert "byte 3" in rejects["latin1"].detail
    by_key = {r.key: r for r in records}
    assert by_key["bom"].caption == "a cat on a mat"
    assert by_key["ok"].caption == "a dog on a mat" and by_key["ok"].url == "https://x.invalid/1.jpg"
    assert by_key["zero_bytes"].image_bytes == b""
    assert len(records) + len(rejects) == len(samples)


def test_truncated_tar_keeps_earlier_records_and_rejects_the_cut_one(tmp_path, photo_samples):
    path = tmp_path / "t.tar"
    write_webdataset(str(path), photo_samples)
    data = path.read_bytes()
    # Cut inside the last sample's image member.
    with tarfile.open(path) as tar:
        last_image = next(m for m in tar.getmembers() if m.name.startswith(photo_samples[-1].key))
    path.write_bytes(data[: last_image.offset_data + last_image.size // 2])
    records, rejects = split(list(read_shard(str(path), CFG)))
    assert [r.key for r in records] == [s.key for s in photo_samples[:-1]]
    reject = rejects[photo_samples[-1].key]
    assert reject.reason == Reason.TRUNCATED_SHARD and reject.index == len(photo_samples) - 1


@pytest.mark.parametrize("cut", ["before_header", "inside_header"])
def test_tar_cut_between_members_is_truncated_not_a_quiet_end(tmp_path, photo_samples, cut):
    """Python's tarfile ends quietly where a file was cut at a member boundary; the missing
    end-of-archive marker says the shard was cut, so the record at the cut is not passed on as whole."""
    path = tmp_path / "t.tar"
    write_webdataset(str(path), photo_samples)
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    caption = next(m for m in members if m.name == f"{photo_samples[1].key}.txt")
    end = caption.offset + (0 if cut == "before_header" else 100)  # the image stays, its caption is lost
    path.write_bytes(path.read_bytes()[:end])
    items = list(read_shard(str(path), CFG))
    assert [getattr(i, "reason", "record") for i in items] == ["record", Reason.TRUNCATED_SHARD]
    assert items[1].key == photo_samples[1].key and "end-of-archive marker" in items[1].detail


@pytest.mark.parametrize("content", [b"", b"this is not a tar file at all" * 40])
def test_unreadable_shards_yield_one_shard_reject(tmp_path, content):
    path = tmp_path / "bad.tar"
    path.write_bytes(content)
    items = list(read_shard(str(path), CFG))
    assert len(items) == 1 and items[0].reason == Reason.UNREADABLE_SHARD and items[0].index == SHARD_INDEX
    assert items[0].detail


def test_empty_tar_is_a_shard_without_records(tmp_path):
    path = write_webdataset(str(tmp_path / "empty.tar"), [])
    assert list(read_shard(path, CFG)) == []


def test_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"PK")
    assert [i.reason for i in read_shard(str(tmp_path / "x.zip"), CFG)] == [Reason.UNREADABLE_SHARD]
    assert [i.reason for i in read_shard(str(tmp_path / "missing.tar"), CFG)] == [Reason.UNREADABLE_SHARD]


def test_img2dataset_parquet(tmp_path, photo_samples):
    samples = [*photo_samples, RawSample("failed", None, "a cat", meta={"url": "u"})]
    path = write_img2dataset_parquet(str(tmp_path / "p.parquet"), samples)
    records, rejects = split(list(read_shard(path, CFG)))
    assert [r.key for r in records] == [s.key for s in photo_samples]
    assert records[1].image_bytes == photo_samples[1].image
    # img2dataset's status is the reason, its error message the detail; the URL is kept
    failed = rejects["failed"]
    assert (failed.reason, failed.detail, failed.url) == (
        Reason.FAILED_TO_DOWNLOAD,
        "img2dataset failed_to_download: sample: no image",
        "u",
    )


def test_parquet_streams_in_batches_and_derives_missing_keys(tmp_path, photo_samples):
    image = photo_samples[0].image
    table = pa.table({"caption": [f"a cat number {i}" for i in range(600)], "png": [image] * 600})
    path = str(tmp_path / "nokey.parquet")
    pq.write_table(table, path, row_group_size=100)
    records = list(read_shard(path, CFG))
    assert len(records) == 600 and records[599].key == "nokey:599" and records[599].index == 599


def test_parquet_without_image_column_rejects_every_row(tmp_path):
    path = str(tmp_path / "meta.parquet")
    pq.write_table(pa.table({"key": ["a", "b"], "caption": ["x", "y"]}), path)
    items = list(read_shard(path, CFG))
    assert [i.reason for i in items] == [Reason.MISSING_IMAGE] * 2 and "no image column" in items[0].detail


def test_manifest(tmp_path, photo_samples):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(photo_samples[0].image)
    lines = [
        json.dumps({"key": "a", "image": "img/a.jpg", "caption": "a cat"}),
        json.dumps({"image": "img/a.jpg", "captions": ["first caption", "second"]}),
        "{not json",
        json.dumps({"key": "gone", "image": "img/missing.jpg", "caption": "a dog"}),
        "",
        json.dumps({"key": "nocap", "image": "img/a.jpg"}),
    ]
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    items = list(read_shard(str(path), CFG))
    records, rejects = split(items)
    assert [(r.key, r.caption) for r in records] == [("a", "a cat"), ("a", "first caption")]
    assert rejects["gone"].reason == Reason.IMAGE_NOT_FOUND
    assert rejects["nocap"].reason == Reason.MISSING_CAPTION
    assert rejects[""].reason == Reason.BAD_MANIFEST_LINE and "line 3" in rejects[""].detail


class FlakyFiles:
    """An fsspec filesystem over local files whose reads fail with ConnectionError a set number of
    times, part-way through the file (a dropped connection)."""

    failures = 0

    @classmethod
    def register(cls):
        import fsspec
        from fsspec.implementations.local import LocalFileOpener, LocalFileSystem

        class FlakyOpener(LocalFileOpener):
            def read(self, size=-1):
                if FlakyFiles.failures and self.tell() > 2000:
                    FlakyFiles.failures -= 1
                    raise ConnectionError("connection reset by peer (simulated)")
                return super().read(size)

        class FlakyFileSystem(LocalFileSystem):
            protocol = "flaky"

            def _open(self, path, mode="rb", **kwargs):
                return FlakyOpener(self._strip_protocol(path), mode, fs=self, **kwargs)

            @classmethod
            def _strip_protocol(cls, path):
                return path[len("flaky://") :] if path.startswith("flaky://") else path

        fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)


def test_transient_storage_errors_are_retried_without_losing_or_repeating_records(tmp_path, photo_samples):
    FlakyFiles.register()
    path = write_webdataset(str(tmp_path / "f.tar"), photo_samples)
    FlakyFiles.failures = 2
    items = list(read_shard("flaky://" + path, CFG, base_delay_s=0.0))
    assert [i.key for i in items] == [s.key for s in photo_samples] and FlakyFiles.failures == 0
    FlakyFiles.failures = 10  # more failures than attempts: the rest of the shard is rejected, saying why
    items = list(read_shard("flaky://" + path, CFG, attempts=3, base_delay_s=0.0))
    assert items[-1].reason == Reason.UNREADABLE_SHARD and "after 3 attempts" in items[-1].detail
    assert all(isinstance(i, ImageRecord) for i in items[:-1])


def test_a_damaged_tar_header_mid_shard_is_a_reject_not_a_quiet_end(tmp_path, photo_samples):
    """Python's tarfile stops without a word at a header whose checksum is wrong once it is past the
    first member, so every record after the damage vanished unaccounted; now the shard says it is
    damaged at the record being read (it may be missing members), and the records before it stand."""
    path = tmp_path / "t.tar"
    write_webdataset(str(path), photo_samples)
    with tarfile.open(path) as tar:
        third = next(m for m in tar.getmembers() if m.name.startswith(photo_samples[2].key))
    data = bytearray(path.read_bytes())
    data[third.offset + 3] ^= 0xFF  # a byte of the member's name: its header checksum no longer holds
    path.write_bytes(bytes(data))
    items = list(read_shard(str(path), CFG))
    assert [getattr(i, "reason", "record") for i in items] == ["record", Reason.TRUNCATED_SHARD]
    assert items[0].key == photo_samples[0].key
    assert items[1].key == photo_samples[1].key and items[1].index == 1 and "header" in items[1].detail


def test_a_tar_with_a_sparse_member_is_read_by_tarfile_without_repeating_records(tmp_path, photo_samples):
    """TarStream leaves GNU sparse members to Python's tarfile: the shard is read again from the start
    and only what was not passed on yet is passed on."""
    import io

    from vesl.io.readers import webdataset

    path = tmp_path / "sparse.tar"
    write_webdataset(str(path), photo_samples[:2])
    body = path.read_bytes()
    with tarfile.open(path) as tar:
        end = tar.getmembers()[-1]
    cut = end.offset_data + -(-end.size // 512) * 512
    sparse = tarfile.TarInfo(f"{photo_samples[1].key}x.bin")
    sparse.type = tarfile.GNUTYPE_SPARSE
    extra = io.BytesIO()
    with tarfile.open(fileobj=extra, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(sparse)
        for name in ("late.jpg", "late.txt"):
            info = tarfile.TarInfo(name)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"data"))
    path.write_bytes(body[:cut] + extra.getvalue())
    items = list(read_shard(str(path), CFG))
    reference = list(webdataset._read_webdataset(str(path), CFG, webdataset._tarfile_members))
    assert items == reference
    assert [i.key for i in items] == [photo_samples[0].key, photo_samples[1].key, f"{photo_samples[1].key}x", "late"]


# -- the keys-only read of the duplicate-key pass ----------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_MEMBER = st.tuples(
    st.sampled_from(["a", "b", "c", "d", "e.x", "7", ""]),  # keys (adjacent repeats form one record)
    st.sampled_from(["jpg", "png", "txt", "json", "TXT", "webp", "cls"]),
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from([b"a cat", b"  ", b"\xff\xfe", "caf\u00e9".encode(), b"x" * 90]),
    ),
)


def _hostile_tar(path, members, cut):
    import io

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, ext, data in members:
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = buffer.getvalue()
    path.write_bytes(blob[: max(0, len(blob) - cut)] if cut else blob)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(members=st.lists(_MEMBER, max_size=12), cut=st.one_of(st.just(0), st.integers(1, 3000)))
def test_keys_only_read_gives_the_same_records_and_rejects(tmp_path, members, cut):
    """Whatever the members, their sizes (caps of 60 image bytes, 20 caption characters) and wherever the
    file is cut, skipping image and metadata bytes changes nothing but those bytes."""
    path = tmp_path / "s.tar"
    _hostile_tar(path, members, cut)
    cfg = ReadConfig(max_image_bytes=60, max_caption_chars=20)
    full = list(read_shard(str(path), cfg))
    keys = list(read_shard(str(path), cfg, keys_only=True))

    def shape(item):
        if isinstance(item, ImageRecord):
            return ("record", item.key, item.index, item.caption)
        return ("reject", item.key, item.index, item.reason)

    assert [shape(i) for i in keys] == [shape(i) for i in full]
    assert all(i.image_bytes == b"" for i in keys if isinstance(i, ImageRecord))


def test_keys_only_read_seeks_over_image_bytes(tmp_path, photo_samples):
    """The pass reads headers and captions: every image byte is skipped, not read."""
    import dataclasses

    import fsspec

    samples = [dataclasses.replace(s, key=f"{s.key}-{i}") for i in range(4) for s in photo_samples]
    path = write_webdataset(str(tmp_path / "a.tar"), samples)
    opener = fsspec.implementations.local.LocalFileOpener
    original = opener.read

    def bytes_read(keys_only: bool) -> tuple[list[str], int]:
        counted = [0]

        def counting(self, *args):
            data = original(self, *args)
            counted[0] += len(data)
            return data

        opener.read = counting
        try:
            items = list(read_shard(path, CFG, keys_only=keys_only))
        finally:
            opener.read = original
        return [i.key for i in items if isinstance(i, ImageRecord)], counted[0]

    keys, skipping = bytes_read(True)
    all_keys, reading = bytes_read(False)
    assert keys == all_keys == [s.key for s in samples]
    assert reading - skipping >= sum(len(s.image) for s in samples)
