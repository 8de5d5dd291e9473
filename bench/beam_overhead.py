"""What Beam itself costs a record: per fused step, and per encoding at a grouping.

    python -m bench.beam_overhead [--elements 100000] [--steps 10]

Prints one JSON line:
- ``fused_step_us``: CPU microseconds per element per fused ``Map`` step on the FnApiRunner, for a
  small int and for a record-like object (the run with ``--steps`` identity Maps minus the run with
  none, divided by elements x steps): the cost a per-record DoFn adds, which batching records
  through the DoFns would save.
- ``encode_us``: CPU microseconds to encode and decode one element with the coder Beam picks at the
  write grouping, for a Parquet row (``vesl.schema.to_parquet_row``: FastPrimitivesCoder), a TFRecord
  Example (bytes) and, for comparison, the whole labeled record pickled (what a grouping of records
  would cost); and, per row, the schema'd alternative for the Parquet rows: ``--batch`` rows of one
  shard as one Arrow record batch in Arrow's IPC format (the Parquet schema's own types), encoded and
  decoded as one element.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from datetime import date


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Record:
    """Shaped like a small record: a few fields, one string."""

    __slots__ = ("index", "key")

    def __init__(self, index: int):
        self.index = index
        self.key = f"{index:09d}-" + "x" * 40


def _identity(x):
    return x


def fused_run(elements: int, steps: int, make) -> float:
    import apache_beam as beam

    pipeline = beam.Pipeline(runner="FnApiRunner")
    items = pipeline | beam.Create([0]) | beam.FlatMap(lambda _: (make(i) for i in range(elements)))
    for step in range(steps):
        items = items | f"Step{step}" >> beam.Map(_identity)
    _ = items | beam.combiners.Count.Globally()
    start = _cpu()
    pipeline.run().wait_until_finish()
    return _cpu() - start


def encode_us(coder, value, repeat: int = 2000) -> float:
    start = time.process_time()
    for _ in range(repeat):
        coder.decode(coder.encode(value))
    return round((time.process_time() - start) / repeat * 1e6, 2)


def arrow_batch_us(rows: list[dict], schema, repeat: int = 20) -> dict[str, float]:
    """Per row: building the Arrow batch from ``rows`` (which the Parquet sink does today anyway, at
    the end), and the batch's round trip through Arrow's IPC format (what a grouping carrying batches
    instead of rows would add)."""
    import pyarrow as pa

    build = ipc = 0.0
    for _ in range(repeat):
        start = time.process_time()
        batch = pa.RecordBatch.from_pylist(rows, schema=schema)
        middle = time.process_time()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, schema) as writer:
            writer.write_batch(batch)
        decoded = pa.ipc.open_stream(sink.getvalue().to_pybytes()).read_all()
        assert decoded.num_rows == len(rows)
        build, ipc = build + middle - start, ipc + time.process_time() - middle
    per_row = 1e6 / (repeat * len(rows))
    return {"build_batch": round(build * per_row, 2), "ipc_round_trip": round(ipc * per_row, 2)}


def labeled_sample():
    from vesl.records import ImageRecord, LabeledImage, Phrase, Region

    phrases = (Phrase("a red car", 0, 9, "cloc"), Phrase("the road", 13, 21, "spacy"), Phrase("a man", 25, 30, "spacy"))
    record = ImageRecord("000000001", "gs://b/00000.tar", 7, "a red car on the road, a man", b"", "https://u", phrases)
    regions = tuple(
        Region(p.text, p.char_start, p.char_end, p.parser, i % 3, (0.1, 0.2, 0.5, 0.7), 0.5, 0.25)
        for i, p in enumerate(phrases * 2)
    )
    return LabeledImage(record, regions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1000, help="rows per Arrow batch (a shard's rows)")
    args = parser.parse_args(argv)
    from apache_beam.coders import coders
    from apache_beam.coders.typecoders import registry

    from vesl.io.tfexample import encode_example
    from vesl.schema import Provenance, parquet_schema, to_parquet_row, to_tf_features

    fused = {}
    for name, make in (("int", int), ("record", Record)):
        base = fused_run(args.elements, 0, make)
        stepped = fused_run(args.elements, args.steps, make)
        fused[name] = round((stepped - base) / (args.elements * args.steps) * 1e6, 2)
    item = labeled_sample()
    provenance = Provenance.for_run("cloc", "tiny", 64, "bench", "digest", "none")
    row = to_parquet_row(item, provenance, False)
    example = encode_example(to_tf_features(item, provenance, False))
    row_coder = registry.get_coder(object)  # what a dict-valued PCollection gets: FastPrimitivesCoder
    print(
        json.dumps(
            {
                "bench": "beam_overhead",
                "date": date.today().isoformat(),
                "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                "elements": args.elements,
                "steps": args.steps,
                "fused_step_us": fused,
                "encode_us": {
                    "parquet_row": encode_us(row_coder, ("shard-id", row)),
                    "tfrecord_example": encode_us(row_coder, ("shard-id", example)),
                    "labeled_record_pickled": encode_us(coders.PickleCoder(), item),
                    "parquet_row_in_arrow_batch": arrow_batch_us([row] * args.batch, parquet_schema("{}")),
                },
                "row_coder": type(row_coder).__name__,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
