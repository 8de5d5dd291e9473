"""Arguments neither VESL nor Beam knows are usage errors before any work (Beam alone only warns and
runs the job with the default); every option VESL or Beam knows still works."""

from __future__ import annotations

import argparse

import pytest

from pipelines.vesl import main
from vesl.options import all_options_parser, check_arguments


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--score_treshold", "0.9"], "unknown option '--score_treshold': neither VESL nor Beam has it; did you mean '--score_threshold'?"),
        (["--max_phrase=3"], "unknown option '--max_phrase': neither VESL nor Beam has it; did you mean '--max_phrases'?"),
        (["--runer", "DataflowRunner"], "did you mean '--runner'?"),
        (["--frobnicate", "1"], "unknown option '--frobnicate': neither VESL nor Beam has it"),
        (["stray"], "unexpected argument 'stray'"),
        (["--max_phrases", "many"], "argument --max_phrases: invalid int value: 'many'"),
    ],
)  # fmt: skip
def test_an_unknown_argument_is_one_line_and_exit_2_before_any_work(tmp_path, capsys, argv, said):
    out = tmp_path / "out"
    status = main(["--input", str(tmp_path / "nothing-here.tar"), "--output", str(out), *argv])
    err = capsys.readouterr().err
    assert status == 2 and said in err and err.count("\n") == 1  # one line, before the input is even looked at
    assert not out.exists()


def accepted_with_some_value(option: str, action: argparse.Action) -> bool:
    """Whether ``option`` passes the check with a value its action takes (a flag: with none)."""
    if action.nargs == 0:
        candidates: list[list[str]] = [[]]
    elif action.choices:
        candidates = [[str(next(iter(action.choices)))]]
    else:
        candidates = [[value] for value in ("1", "true", "2,4", '{"a": "b"}', "x")]
    for values in candidates:
        try:
            check_arguments([option, *values])
            return True
        except ValueError as exc:
            assert "unknown option" not in str(exc)
    return False


def test_every_vesl_and_beam_option_is_accepted():
    parser = all_options_parser()
    options = [action for action in parser._actions if action.option_strings and action.dest != "help"]
    assert len(options) > 150  # Beam's few hundred and VESL's
    names = {o for action in options for o in action.option_strings}
    assert {"--runner", "--project", "--experiments", "--dataflow_service_options", "--direct_num_workers"} <= names
    assert {"--score_threshold", "--detector_backend", "--compile", "--write_webdataset", "--list_shards"} <= names
    refused = [o for action in options for o in action.option_strings if not accepted_with_some_value(o, action)]
    assert refused == []
