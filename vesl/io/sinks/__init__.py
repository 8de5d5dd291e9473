"""Output sinks: each output format behind one interface (``base.OutputSink``), registered here.

| sink | module | file per input shard |
|---|---|---|
| parquet | ``parquet`` | ``parquet/SHARD.parquet``: one row per written image |
| tfrecord | ``tfrecord`` | ``tfrecord/SHARD.tfrecord[.gz]``: one ``tf.train.Example`` per written image |
| webdataset | ``webdataset`` | ``webdataset/SHARD.tar``: ``KEY.txt`` + ``KEY.json`` (+ the image) per written image |

To add one: its module (an ``OutputSink`` subclass) and one line in ``SINKS``, plus its on/off switch in
``vesl.config.WriteConfig`` and ``vesl.options`` (docs/architecture.md).
"""

from __future__ import annotations

from vesl.config import WriteConfig
from vesl.io.sinks.base import OutputSink
from vesl.io.sinks.parquet import ParquetSink
from vesl.io.sinks.tfrecord import TFRecordSink
from vesl.io.sinks.webdataset import WebDatasetSink
from vesl.schema import Provenance

__all__ = ["SINKS", "OutputSink", "enabled_sinks", "sink_suffixes"]

# The registry, in the order the formats are written and read back (keys come from the first present).
SINKS: dict[str, type[OutputSink]] = {sink.name: sink for sink in (ParquetSink, TFRecordSink, WebDatasetSink)}


def enabled_sinks(config: WriteConfig, provenance: Provenance, config_json: str) -> list[OutputSink]:
    """The sinks a run writes, ready to encode and write."""
    return [sink(config, provenance, config_json) for sink in SINKS.values() if sink.enabled(config)]


def sink_suffixes(config: WriteConfig) -> tuple[tuple[str, str], ...]:
    """(sink name, file suffix) of every registered sink under ``config``, for ``OutputLayout``."""
    return tuple((name, sink.suffix(config)) for name, sink in SINKS.items())
