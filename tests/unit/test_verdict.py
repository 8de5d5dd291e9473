"""The command's exit status and its one-line reasons (pipelines.vesl.verdict)."""

from __future__ import annotations

from pipelines.vesl import verdict


def counts(read=3, written=2, rejected=1, **extra):
    base = {
        "shards": 1,
        "read": read,
        "written": written,
        "rejected": rejected,
        "balanced": read == written + rejected,
        "rejected_by_stage": {"read": {"empty_caption": rejected}} if rejected else {},
    }
    return {**base, **extra}


def test_a_normal_run_passes_quietly():
    assert verdict(counts()) == (0, [])


def test_unbalanced_counts_fail_with_the_numbers():
    status, lines = verdict(counts(read=4))
    assert status == 1 and lines == [
        "vesl: error: counts do not balance: read 4 != written 2 + rejected 1 (a record was lost or counted "
        "twice; please report it)"
    ]


def test_writing_nothing_fails_unless_allowed():
    status, lines = verdict(counts(read=0, written=0, rejected=0))
    assert status == 1 and "the input held no records (1 shards)" in lines[0]
    assert verdict(counts(read=0, written=0, rejected=0), allow_empty=True) == (0, [])
    status, lines = verdict(counts(read=2, written=0, rejected=2))
    assert status == 1 and "read 2 records but wrote none (rejected: read: empty_caption 2)" in lines[0]


def test_failed_batches_and_bookkeeping_problems_are_warnings():
    c = counts(
        rejected_by_stage={"detect": {"inference_error": 1}},
        source_checks={"problems": 2, "problems_listed": ["s: a", "s: b"]},
    )
    status, lines = verdict(c)
    assert status == 0 and len(lines) == 2 and all(line.startswith("vesl: warning: ") for line in lines)
    assert "(2 problems, e.g. s: a)" in lines[1]


def test_progress_is_shown_on_a_terminal_or_when_asked(monkeypatch):
    import sys

    from vesl.launch import wants_progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert (wants_progress("auto"), wants_progress("true"), wants_progress("false")) == (False, True, False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert (wants_progress("auto"), wants_progress("false")) == (True, False)
