"""A look at every element that goes into a GroupByKey (and so into a shuffle on Dataflow).

``ProbedPipeline`` is a TestPipeline that, just before it runs, finds every GroupByKey in the graph
(those inside CoGroupByKey, CombinePerKey, Reshuffle and WriteToFiles included) and attaches a probe
to its input: each element is walked (tuples, lists, dicts, dataclasses) and the probe records, per
GroupByKey, how many elements it saw, the largest pickled element, the largest ``bytes`` inside one,
whether any ``bytes`` holds a JPEG (its SOI + marker prefix) and which record types appear.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import typing
import uuid
from collections import Counter
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.pipeline import PipelineVisitor
from apache_beam.testing.test_pipeline import TestPipeline

JPEG_PREFIX = b"\xff\xd8\xff"


def walk(value, found: dict, depth: int = 0) -> None:
    if depth > 12:
        return
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        found["max_bytes"] = max(found["max_bytes"], len(data))
        found["jpeg"] = found["jpeg"] or JPEG_PREFIX in data
    elif isinstance(value, np.ndarray):
        found["types"].add("ndarray")
        found["max_bytes"] = max(found["max_bytes"], value.nbytes)
    elif isinstance(value, dict):
        for k, v in value.items():
            walk(k, found, depth + 1)
            walk(v, found, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            walk(v, found, depth + 1)
    elif dataclasses.is_dataclass(value):
        found["types"].add(type(value).__name__)
        for f in dataclasses.fields(value):
            walk(getattr(value, f.name), found, depth + 1)
    elif hasattr(value, "__iter__") and not isinstance(value, str):  # grouped values (lazy iterables)
        for v in value:
            walk(v, found, depth + 1)


class ProbeFn(beam.DoFn):
    def infer_output_type(self, input_type):  # Beam's inference would walk ``walk`` for minutes
        return typing.Any

    def __init__(self, label: str, out_dir: str):
        self.label, self.out_dir = label, out_dir

    def start_bundle(self):
        self.found = {"elements": 0, "max_pickled": 0, "max_bytes": 0, "jpeg": False, "types": set()}

    def process(self, element):
        self.found["elements"] += 1
        self.found["max_pickled"] = max(self.found["max_pickled"], len(pickle.dumps(element)))
        walk(element, self.found)
        return []

    def finish_bundle(self):
        if self.found["elements"]:
            out = {**self.found, "types": sorted(self.found["types"]), "label": self.label}
            Path(self.out_dir, f"{uuid.uuid4().hex}.json").write_text(json.dumps(out))


class _FindGroupings(PipelineVisitor):
    def __init__(self):
        self.nodes = []

    def visit_transform(self, node):
        if isinstance(node.transform, beam.GroupByKey):
            self.nodes.append(node)


class ProbedPipeline(TestPipeline):
    def __init__(self, out_dir: str, **kwargs):
        super().__init__(runner="FnApiRunner", **kwargs)
        self.out_dir = out_dir

    def run(self, test_runner_api="AUTO"):
        finder = _FindGroupings()
        self.visit(finder)
        for i, node in enumerate(finder.nodes):
            pcoll = node.inputs[0]
            pcoll | f"ProbeGrouped{i}" >> beam.ParDo(ProbeFn(node.full_label, self.out_dir))
        self.groupings = [node.full_label for node in finder.nodes]
        return super().run(test_runner_api)


def read_probes(out_dir: str) -> dict[str, dict]:
    """GroupByKey label -> what its input held, over all bundles."""
    merged: dict[str, dict] = {}
    for path in Path(out_dir).glob("*.json"):
        part = json.loads(path.read_text())
        into = merged.setdefault(
            part["label"], {"elements": 0, "max_pickled": 0, "max_bytes": 0, "jpeg": False, "types": Counter()}
        )
        into["elements"] += part["elements"]
        into["max_pickled"] = max(into["max_pickled"], part["max_pickled"])
        into["max_bytes"] = max(into["max_bytes"], part["max_bytes"])
        into["jpeg"] = into["jpeg"] or part["jpeg"]
        into["types"].update(part["types"])
    return merged
