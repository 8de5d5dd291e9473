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
