"""The runner of local runs: Beam's FnApiRunner, for ``--runner FnApiRunner`` (the default) and
``--runner DirectRunner``.

Beam 2.77's DirectRunner first tries the Prism runner (a binary it downloads at run time, so offline it
fails after a wait) and then falls back to the FnApiRunner with the options handed to its workers;
``LocalRunner`` is that fallback, taken at once. ``PrismRunner`` or ``BundleBasedDirectRunner`` named
explicitly are Beam's own.

Its ``multi_processing`` worker processes ignore SIGINT. Ctrl-C sends SIGINT to every process of the
terminal's process group, the workers included: each would print a KeyboardInterrupt traceback. The
launcher handles the signal instead (``vesl.stopping``): it stops the workers itself and says one line.
And their standard error is read by the launcher (``WorkerOutput``), not printed: a worker prints there the
traceback of every failed bundle, which it also relays to the launcher's log and the launcher says in one
line, the whole traceback kept in a file (with the end of the workers' standard error). Their logging
reaches the launcher's log as before.
"""

from __future__ import annotations

import os
import threading

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import python_urns
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.portable_runner import JobServiceHandle

# The worker command runs under ``sh -c``: ``trap '' INT`` leaves SIGINT ignored for the Python it execs,
# and a Python started with SIGINT ignored installs no KeyboardInterrupt handler.
IGNORE_SIGINT = b"trap '' INT; exec "
RUNNER_NAMES = ("fnapirunner", "directrunner")
KEPT_OUTPUT_BYTES = 1 << 18  # of the workers' standard error, for the traceback file of a failed run


class LocalRunner(fn_runner.FnApiRunner):
    """The FnApiRunner; its worker processes deaf to SIGINT, their standard error read by this process
    (``worker_output``); its workers given the pipeline's options."""

    def __init__(self, options: PipelineOptions):
        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
        super().__init__(provision_info=info)
        self._output = WorkerOutput() if os.path.isdir(f"/proc/{os.getpid()}/fd") else None

    def run_via_runner_api(self, pipeline_proto, options):
        for environment in pipeline_proto.components.environments.values():
            if environment.urn == python_urns.SUBPROCESS_SDK and not environment.payload.startswith(IGNORE_SIGINT):
                redirect = self._output.redirect if self._output else b""
                environment.payload = IGNORE_SIGINT + environment.payload + redirect
        return super().run_via_runner_api(pipeline_proto, options)

    def worker_output(self) -> str:
        """The end of what the worker processes wrote to standard error; stops reading it."""
        return self._output.close() if self._output else ""


class WorkerOutput:
    """A pipe the worker processes' standard error goes into, drained by a thread that keeps its last
    KEPT_OUTPUT_BYTES. Not a file: a worker that cannot write its stderr (a full disk) stops answering
    the runner, which then waits for it for ever; a pipe that is always read never refuses a write. Beam
    starts the workers with their other file descriptors closed, so they open the pipe by its /proc path."""

    def __init__(self):
        self._read, self._write = os.pipe()
        self.redirect = f" 2>/proc/{os.getpid()}/fd/{self._write}".encode()
        self._kept = bytearray()
        self._thread = threading.Thread(target=self._drain, name="vesl-worker-stderr", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while chunk := os.read(self._read, 1 << 16):
            self._kept += chunk
            del self._kept[:-KEPT_OUTPUT_BYTES]

    def close(self) -> str:
        if self._write >= 0:
            os.close(self._write)  # the reader sees the end once the workers' copies are closed too
            self._write = -1
            self._thread.join(timeout=5)
        return self._kept.decode("utf-8", errors="replace")


def local_runner(runner_name: str, options: PipelineOptions) -> LocalRunner | None:
    """A LocalRunner for these runner names (case-insensitive), else None (the runner Beam makes)."""
    return LocalRunner(options) if runner_name.lower() in RUNNER_NAMES else None
