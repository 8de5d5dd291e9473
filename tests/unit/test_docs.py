"""The README stays true to the code: every option and reject reason is documented."""

from __future__ import annotations

from pathlib import Path

from vesl.options import _FIELDS
from vesl.records import Reason
from vesl.schema import PARQUET_FIELDS, TFKeys

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_option_is_in_the_readme():
    from vesl.models.backends import BACKENDS

    flags = [flag for flag, *_ in _FIELDS] + [f.flag for backend in BACKENDS.values() for f in backend.flags]
    missing = [flag for flag in flags if f"`--{flag}`" not in README]
    assert not missing


def test_every_reject_reason_is_in_the_readme():
    reasons = [v for k, v in vars(Reason).items() if k.isupper()]
    assert [r for r in reasons if f"`{r}`" not in README] == []


def test_every_output_column_and_key_is_in_the_readme():
    assert [f.name for f in PARQUET_FIELDS if f"`{f.name}`" not in README] == []
    keys = [v for k, v in vars(TFKeys).items() if k.isupper() and not k.endswith("PREFIX")]
    undocumented = [k for k in keys if k not in README and k.rsplit("/", 1)[-1] not in README]
    assert undocumented == []


def test_requirements_txt_is_the_locked_runtime_set_make_installs():
    """``pip install -r requirements.txt`` gives what ``make`` installs: the torch release the Makefile pins
    and the lock file (a fresh venv's ``pip freeze`` from it equalled the lock, 2026-12-05)."""
    root = Path(__file__).resolve().parents[2]
    lines = [line for line in (root / "requirements.txt").read_text().splitlines() if line and line[0] != "#"]
    makefile = (root / "Makefile").read_text()
    torch_spec = next(line for line in makefile.splitlines() if line.startswith("TORCH_SPEC ?="))
    assert lines == [torch_spec.split("?=")[1].strip(), "-r requirements/lock.txt"]
    assert "-r requirements.txt" in makefile
    lock = (root / "requirements" / "lock.txt").read_text()
    assert all("==" in line for line in lock.splitlines() if line and line[0] != "#")  # exact versions only
