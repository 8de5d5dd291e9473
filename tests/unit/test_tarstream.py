"""``vesl.io.readers.tarstream`` against Python's tarfile, on archives tarfile itself writes."""

from __future__ import annotations

import io
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vesl.io.readers.tarstream import TarCut, TarDamaged, TarStream, TarUnsupported

names = st.one_of(
    st.from_regex(r"[a-z0-9_]{1,12}\.(jpg|txt|json)", fullmatch=True),
    st.from_regex(r"(dir/){1,40}[a-z]{1,90}\.jpg", fullmatch=True),  # > 100 and > 255 characters
    st.text(st.characters(codec="utf-8", exclude_characters="/\0"), min_size=1, max_size=30).map(lambda s: s + ".txt"),
)
entries = st.lists(st.tuples(names, st.sampled_from(["file", "dir", "symlink"]), st.binary(max_size=1500)), max_size=8)
formats = st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])


def build(items, fmt, global_pax=None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt, pax_headers=global_pax or {}) as tar:
        for name, kind, data in items:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.type, info.linkname = tarfile.SYMTYPE, "elsewhere/" + name[:50]
                tar.addfile(info)
    return out.getvalue()


def with_tarfile(raw: bytes) -> list[tuple]:
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r|") as tar:
        return [(m.name, m.size, m.isfile(), tar.extractfile(m).read() if m.isfile() else None) for m in tar]


def with_tarstream(raw: bytes, seekable: bool = True) -> list[tuple]:
    class Unseekable(io.BytesIO):
        def seekable(self):
            return False

    stream = TarStream(io.BytesIO(raw) if seekable else Unseekable(raw))
    return [(m.name, m.size, m.is_file, stream.read() if m.is_file else None) for m in stream]


def encodable(items, fmt) -> bool:
    try:
        build(items, fmt)
        return True
    except (ValueError, UnicodeEncodeError):  # e.g. a name too long for ustar
        return False


@settings(max_examples=150, deadline=None)
@given(entries, formats, st.booleans())
def test_members_names_sizes_and_data_equal_tarfiles(items, fmt, seekable):
    if not encodable(items, fmt):
        return
    raw = build(items, fmt)
    assert with_tarstream(raw, seekable) == with_tarfile(raw)


def test_global_pax_headers_and_unread_members_are_skipped_the_same_way():
    items = [("a.jpg", "file", b"x" * 700), ("a.txt", "file", b"a cat"), ("b.jpg", "file", b"")]
    raw = build(items, tarfile.PAX_FORMAT, global_pax={"comment": "made by a test"})
    stream = TarStream(io.BytesIO(raw))
    seen = [(m.name, stream.read() if m.name.endswith(".txt") else None) for m in stream]  # .jpg never read
    assert seen == [("a.jpg", None), ("a.txt", b"a cat"), ("b.jpg", None)]


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_a_cut_anywhere_before_the_end_marker_is_reported_never_a_quiet_end(data):
    items = [(f"k{i}.{ext}", "file", bytes([i]) * (100 * i + 1)) for i in range(4) for ext in ("jpg", "txt")]
    raw = build(items, tarfile.USTAR_FORMAT)
    end_marker = len(raw.rstrip(b"\0")) // 512 * 512 + 512  # past the last member's data block
    cut = data.draw(st.integers(1, end_marker - 1))
    got = []
    with pytest.raises((TarCut, tarfile.ReadError)):
        stream = TarStream(io.BytesIO(raw[:cut]))
        for member in stream:
            body = stream.read()
            if len(body) < member.size:
                raise TarCut("cut inside data")  # the caller's rule: a short member is a cut
            got.append((member.name, body))
    full = [(name, body) for name, _, body in items]
    assert got == full[: len(got)]


def test_a_damaged_header_past_the_first_raises_where_tarfile_goes_quiet():
    items = [(f"k{i}.txt", "file", b"caption") for i in range(4)]
    raw = bytearray(build(items, tarfile.USTAR_FORMAT))
    raw[2 * 1024 + 5] ^= 0xFF  # the third member's name
    assert [m[0] for m in with_tarfile(bytes(raw))] == ["k0.txt", "k1.txt"]  # tarfile: a quiet end
    stream = TarStream(io.BytesIO(bytes(raw)))
    seen = []
    with pytest.raises(TarDamaged, match="byte 2048"):
        for member in stream:
            seen.append(member.name)
    assert seen == ["k0.txt", "k1.txt"]


@pytest.mark.parametrize("raw", [b"", b"not a tar" * 100, bytes(100)])
def test_what_is_no_tar_at_all_is_a_read_error(raw):
    with pytest.raises(tarfile.ReadError):
        list(TarStream(io.BytesIO(raw)))


def test_an_empty_archive_has_no_members():
    assert with_tarstream(build([], tarfile.USTAR_FORMAT)) == []


def test_sparse_members_are_left_to_tarfile():
    header = tarfile.TarInfo("sparse.bin")
    header.type = tarfile.GNUTYPE_SPARSE
    raw = header.tobuf(tarfile.GNU_FORMAT) + bytes(1024)
    with pytest.raises(TarUnsupported):
        list(TarStream(io.BytesIO(raw)))


def test_ustar_names_split_into_prefix_and_name_are_joined():
    name = "a" * 60 + "/" + "b" * 60 + "/" + "c" * 40 + ".jpg"  # 166 characters: ustar's prefix field
    raw = build([(name, "file", b"jpeg")], tarfile.USTAR_FORMAT)
    assert raw[345:346] == b"a"  # tarfile did use the prefix field
    assert with_tarstream(raw) == with_tarfile(raw) == [(name, 4, True, b"jpeg")]


@pytest.mark.parametrize("local", [False, True])
def test_global_pax_records_reach_every_member_as_in_tarfile(local):
    """A global header's records apply to the members after it, with or without their own pax header."""
    items = [("k" * 120 + ".txt" if local else "k.txt", "file", b"a cat")]
    raw = build(items, tarfile.PAX_FORMAT, global_pax={"path": "renamed.txt"})
    assert with_tarstream(raw) == with_tarfile(raw)
