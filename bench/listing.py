"""Listing benchmark: what a driver-side shard list costs the job graph, against a listing by the workers.

    python -m bench.listing [--shards 100000] [--work DIR]

Generates an img2dataset webdataset folder of ``--shards`` empty shards (``NNNNN.tar``,
``NNNNN.parquet``, ``NNNNN_stats.json``: listing reads names only), then prints one JSON line:
- ``driver_list_s``: ``vesl.io.inputs.discover_inputs`` on the folder (the driver's listing);
- ``graph_bytes_driver`` / ``graph_bytes_workers``: the size of the serialized Beam pipeline (the
  runner API proto the launcher submits) of ``build_pipeline`` given that list, and given the
  pattern (``ListOnWorkers``). Dataflow refuses a job request over ~10 MB (its documented limit for
  the request, which holds the graph);
- ``workers_list_s``: ``ListShards`` + ``PlanShards`` alone on the FnApiRunner (one process here:
  the same listing calls, spread over workers on Dataflow), shards counted at the end; it includes
  the runner's start.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path


def make_folder(root: Path, n: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        for suffix in (".tar", ".parquet", "_stats.json"):
            (root / f"{i:06d}{suffix}").touch()


def graph_bytes(source, output: str) -> int:
    import apache_beam as beam

    from vesl.config import build_config
    from vesl.context import RunContext
    from vesl.pipeline import build_pipeline, output_layout
    from vesl.schema import Provenance

    config = build_config("cloc", {"detect": {"checkpoint": "tiny", "device": "cpu"}})
    provenance = Provenance.for_run("cloc", "tiny", 64, "bench", config.digest(), "none")
    pipeline = beam.Pipeline(runner="FnApiRunner")
    build_pipeline(pipeline, config, source, RunContext(output_layout(config, output), provenance))
    return len(pipeline.to_runner_api().SerializeToString())


def time_workers(pattern: str, output: str) -> tuple[float, int]:
    import apache_beam as beam
    from apache_beam.metrics import MetricsFilter

    from vesl.io.layout import OutputLayout
    from vesl.transforms.listing import ListShards, PlanShards

    started = time.perf_counter()
    pipeline = beam.Pipeline(runner="FnApiRunner")
    planned = pipeline | ListShards([pattern], output) | PlanShards(OutputLayout(output), ("bench",), False)
    _ = planned.to_process | beam.Map(lambda _: beam.metrics.Metrics.counter("bench", "listed").inc())
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name("listed"))["counters"]
    return time.perf_counter() - started, sum(c.committed for c in counters)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=100_000)
    parser.add_argument("--work", default=None, help="folder for the generated shards (default: a temp folder)")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="vesl-bench-listing-"))
    folder, output = work / "input", str(work / "out")
    started = time.perf_counter()
    make_folder(folder, args.shards)
    made_s = time.perf_counter() - started

    from vesl.io.inputs import discover_inputs
    from vesl.pipeline import DriverListing, ListOnWorkers

    started = time.perf_counter()
    shards = discover_inputs([str(folder)], output).shards
    driver_s = time.perf_counter() - started
    workers_s, listed = time_workers(str(folder), output)
    row = {
        "bench": "listing",
        "date": date.today().isoformat(),
        "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "shards": args.shards,
        "make_s": round(made_s, 1),
        "driver_list_s": round(driver_s, 2),
        "graph_bytes_driver": graph_bytes(DriverListing(tuple(shards)), output),
        "graph_bytes_workers": graph_bytes(ListOnWorkers((str(folder),)), output),
        "workers_list_s": round(workers_s, 2),
        "workers_listed": listed,
        "driver_listed": len(shards),
    }
    print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
