"""The resume plan (vesl.resume), pure: which input shards run, which committed ones are kept or undone."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vesl.io.layout import shard_output_id
from vesl.io.readers import input_endings
from vesl.resume import ConfigConflict, another_configuration, canonical_id, changed, foreign, match, plan, redo


def v01_shard_id(path: str) -> str:
    """The id VESL 0.1 gave an input shard: its layout cut only these endings (not .tfrecord)."""
    import posixpath
    import re

    base = posixpath.basename(path.rstrip("/"))
    for ext in (".tar.gz", ".tgz", ".tar", ".parquet", ".jsonl", ".json"):
        if base.lower().endswith(ext):
            base = base[: -len(ext)]
            break
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "shard"
    return f"{stem[:80]}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"


@pytest.mark.parametrize("ending", input_endings())
def test_an_inputs_id_and_its_v01_id_have_one_canonical_form(ending):
    path = f"gs://b/data/part-00007{ending}"
    assert canonical_id(v01_shard_id(path)) == canonical_id(shard_output_id(path)) == shard_output_id(path)


def test_an_id_without_a_hash_is_its_own_canonical_form():
    assert canonical_id("nodash") == "nodash"


def test_match_prefers_the_inputs_own_id():
    new, old = "00000-1a2b3c4d", "00000.tfrecord-1a2b3c4d"
    assert match([new], [old]) == {new: old}
    assert match([new], [old, new]) == {new: new}
    assert match([new], ["00001-1a2b3c4d", "00000-ffffffff"]) == {}


def test_plan_keeps_processes_and_undoes():
    inputs = ["a-00000001", "b-00000002", "c-00000003"]
    committed = ["a-00000001", "b.tfrecord-00000002", "z-00000009"]
    resume = plan(inputs, committed, overwrite=False)
    assert resume.process == ("c-00000003",)
    assert resume.keep == {"a-00000001": "a-00000001", "b-00000002": "b.tfrecord-00000002"}
    assert resume.uncommit == () and resume.outside == ("z-00000009",)
    redo = plan(inputs, committed, overwrite=True)
    assert redo.process == tuple(inputs) and redo.keep == {}
    assert redo.uncommit == ("a-00000001", "b.tfrecord-00000002") and redo.outside == ("z-00000009",)


ids = st.lists(st.from_regex(r"[a-z]{1,3}(\.tfrecord)?-[0-9a-f]{8}", fullmatch=True), max_size=12, unique=True)


@given(ids, ids, st.booleans())
def test_every_input_is_processed_or_kept_and_nothing_twice(inputs, committed, overwrite):
    resume = plan(inputs, committed, overwrite)
    assert sorted([*resume.process, *resume.keep]) == sorted(set(inputs))
    assert set(resume.keep.values()) | set(resume.uncommit) | set(resume.outside) <= set(committed)
    assert not set(resume.outside) & (set(resume.keep.values()) | set(resume.uncommit))
    assert len(set(resume.keep.values())) == len(resume.keep)  # one committed shard resumes one input
    assert not (overwrite and resume.keep)


def test_an_input_changed_only_when_both_identities_are_known_and_differ():
    assert changed("size=3 mtime=1", "size=3 mtime=2")
    assert not changed("size=3 mtime=1", "size=3 mtime=1")
    assert not changed(None, "size=3 mtime=1") and not changed("size=3 mtime=1", None) and not changed(None, None)


@given(ids, ids, st.data())
def test_redo_moves_kept_inputs_to_processed_and_undoes_their_commits(inputs, committed, data):
    resume = plan(inputs, committed, overwrite=False)
    again = data.draw(st.lists(st.sampled_from(sorted(resume.keep) or ["x-00000000"]), unique=True))
    after = redo(resume, again)
    moved = set(again) & set(resume.keep)
    assert sorted([*after.process, *after.keep]) == sorted(set(inputs))  # still each input exactly once
    assert set(after.process) == set(resume.process) | moved and set(after.keep) == set(resume.keep) - moved
    assert set(after.uncommit) == set(resume.uncommit) | {resume.keep[i] for i in moved}
    assert after.outside == resume.outside


def test_one_another_configuration_error():
    error = another_configuration("gs://b/out", "d0", "d1", "gs://b/out/_config.json", "write elsewhere", 3)
    assert isinstance(error, ConfigConflict) and isinstance(error, ValueError)
    assert str(error) == (
        "'gs://b/out' holds 3 committed shards made with another configuration (config digest d0, this run d1; "
        "see gs://b/out/_config.json); write elsewhere"
    )
    assert foreign({"d0": "x", "d1": "y", "e1": "z"}, ("d1", "e1")) == {"d0": "x"}
    unknown_count = another_configuration("o", "d0", "d1", "o/stats/s-1.json", "write elsewhere")
    assert str(unknown_count).startswith("'o' holds shards made with another configuration")
