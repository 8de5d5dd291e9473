"""Exclusive CPU time per pipeline stage, for ``bench.scale --stages``.

Each wrapped function charges the thread CPU it spends to its stage, minus what nested wrapped
functions spend (a per-thread stack). A DoFn's ``process`` that is a generator is charged only while
it runs: Beam runs the fused downstream DoFns between two of its yields, and that time goes to them.
What no stage claims (Beam's own work between DoFns, coders, groupings, the runner's threads) is
what the caller's total minus the stages leaves.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections import Counter
from typing import Any

_state = threading.local()
spent: Counter = Counter()
_lock = threading.Lock()


def _stack() -> list:
    if not hasattr(_state, "stack"):
        _state.stack, _state.mark = [], time.thread_time()
    return _state.stack


def _enter(name: str) -> None:
    stack = _stack()
    now = time.thread_time()
    if stack:
        with _lock:
            spent[stack[-1]] += now - _state.mark
    stack.append(name)
    _state.mark = now


def _exit() -> None:
    stack = _stack()
    now = time.thread_time()
    with _lock:
        spent[stack.pop()] += now - _state.mark
    _state.mark = now


def _timed_generator(gen, name: str):
    while True:
        _enter(name)
        try:
            item = next(gen)
        except StopIteration:
            _exit()
            return
        except BaseException:
            _exit()
            raise
        _exit()
        yield item


def timed(function, name: str):
    """``function`` charging its own CPU to ``name`` (and its generator's, while it runs)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        _enter(name)
        try:
            result = function(*args, **kwargs)
        finally:
            _exit()
        return _timed_generator(result, name) if inspect.isgenerator(result) else result

    return wrapper


def patch(owner: Any, attribute: str, name: str | None = None) -> None:
    setattr(owner, attribute, timed(getattr(owner, attribute), name or f"{owner.__name__}.{attribute}"))


def install() -> None:
    """Wrap every VESL DoFn's ``process``, the model handler, the writers' row builders and sinks, and
    the per-shard tallies (call before the pipeline is built: DoFns are pickled by class)."""
    import apache_beam as beam

    from vesl.models import handler
    from vesl.transforms import account, dedup, detect, filter, listing, phrases, read, write

    for module in (account, dedup, detect, filter, listing, phrases, read, write):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, beam.DoFn) and "process" in cls.__dict__:
                patch(cls, "process", cls.__name__)
    patch(handler.DetectorModelHandler, "run_inference", "DetectorModelHandler.run_inference")
    from vesl.io.sinks import SINKS

    for sink in SINKS.values():
        for attribute in ("encode", "write", "close"):
            if attribute in sink.__dict__:
                patch(sink, attribute)
    patch(write.JsonLinesSink, "write")
    patch(write.TallyFn, "add_input")
