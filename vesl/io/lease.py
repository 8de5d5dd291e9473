"""One owner per output folder: the lease ``OUTPUT/_lease.json``.

A run takes the lease before it plans any work and gives it back when it ends. The lease says who
holds the folder (run id, host, process, start) and when the holder last said it was alive
(``heartbeat``, renewed every ``HEARTBEAT_S`` by the launcher while it waits for the job). A second
run finds a live lease and stops with one line naming the holder. A lease is *stale*, and is taken
over with a warning, when its heartbeat is older than ``STALE_AFTER_S`` or its process is gone from
this very host (a killed local run is taken over at once). A job submitted with ``--wait false``
holds the lease until the job's own last step gives it back; it never goes stale by age
(``--take_over_lease`` takes a folder whose job is known to be gone).

Every change of the lease is a compare-and-swap, so two runs racing for a free or stale folder
cannot both win:
- local folders: the read-compare-write runs under ``fcntl.flock`` on ``_lease.json.lock``
  (released by the kernel if the process dies), the new lease lands with an atomic rename;
- ``gs://``: object generation preconditions (``ifGenerationMatch``), the store's own CAS;
- other filesystems: read-compare-write without a lock (advisory only; a warning says so).

A holder that lost its lease (taken over because it looked dead, e.g. a suspended laptop) must not
commit: each shard commit first checks the lease still names its run (``check_holder``), and the
launcher fails the run when a heartbeat finds the lease gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Protocol

import fsspec

LEASE_NAME = "_lease.json"
LOCK_SUFFIX = ".lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0
ATTENDED = "attended"  # a launcher is waiting for the job and renews the heartbeat
SUBMITTED = "submitted"  # the job runs on its own; its last step releases the lease

log = logging.getLogger("vesl")


class LeaseHeld(RuntimeError):
    """Another live run owns the output folder."""


class LeaseLost(RuntimeError):
    """This run's lease was taken over: it must not commit anything more."""


@dataclass(frozen=True)
class Lease:
    run_id: str
    host: str
    pid: int
    started: float
    heartbeat: float
    config_digest: str
    mode: str = ATTENDED
    job_id: str | None = None
    lease_version: int = 1

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Lease:
        raw = json.loads(data)
        fields = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        return cls(**fields)

    def describe(self, now: float) -> str:
        who = f"run {self.run_id} on {self.host} (pid {self.pid})"
        if self.mode == SUBMITTED:
            return f"{who}, job {self.job_id or '?'} submitted {_ago(now - self.started)}"
        return f"{who}, started {_ago(now - self.started)}, last heartbeat {_ago(now - self.heartbeat)}"


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def stale_reason(lease: Lease, now: float, host: str, stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why ``lease`` no longer protects a live run, or None while it does."""
    if lease.host == host and not pid_alive(lease.pid):
        return f"its process {lease.pid} is gone from this host"
    if lease.mode == ATTENDED and now - lease.heartbeat > stale_after_s:
        return f"its last heartbeat is {_ago(now - lease.heartbeat)} (stale after {stale_after_s:.0f} s)"
    return None


class LeaseStore(Protocol):
    """Compare-and-swap storage of one small file. ``token`` identifies the version read."""

    atomic: bool

    def read(self) -> tuple[bytes, object] | None: ...

    def swap(self, token: object | None, data: bytes | None) -> tuple[bool, object | None]:
        """Replace the version ``token`` (None: the file must not exist) with ``data`` (None: delete).
        Returns (done, the new version's token); not done, and nothing changed, when the file is no
        longer version ``token``."""
        ...


class LocalLeaseStore:
    atomic = True

    def __init__(self, path: str):
        self.path = path

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path + LOCK_SUFFIX, "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _read_unlocked(self) -> bytes | None:
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def read(self) -> tuple[bytes, object] | None:
        with self._locked():
            data = self._read_unlocked()
        return None if data is None else (data, data)

    def swap(self, token: object | None, data: bytes | None) -> tuple[bool, object | None]:
        with self._locked():
            if self._read_unlocked() != token:
                return False, None
            if data is None:
                os.unlink(self.path)
            else:
                temp = f"{self.path}.tmp-{uuid.uuid4().hex}"
                with open(temp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(temp, self.path)
            return True, data


class GcsLeaseStore:
    """gs://bucket/path through google-cloud-storage (installed with Beam's [gcp] extra): the object
    generation is the token and every write or delete is conditional on it."""

    atomic = True

    def __init__(self, url: str, client=None):
        from google.cloud import storage

        bucket, _, name = url[len("gs://") :].partition("/")
        self.blob_name = name
        self.bucket = (client or storage.Client()).bucket(bucket)

    def read(self) -> tuple[bytes, object] | None:
        blob = self.bucket.get_blob(self.blob_name)
        if blob is None:
            return None
        try:
            return blob.download_as_bytes(if_generation_match=blob.generation), blob.generation
        except Exception as exc:  # replaced (412) or given back (404) between the two calls: read again
            if _lost_race(exc):
                return self.read()
            raise

    def swap(self, token: object | None, data: bytes | None) -> tuple[bool, object | None]:
        blob = self.bucket.blob(self.blob_name)
        try:
            if data is None:
                if token is None:
                    return self.bucket.get_blob(self.blob_name) is None, None
                blob.delete(if_generation_match=token)
                return True, None
            # generation 0 means "the object must not exist"
            blob.upload_from_string(data, content_type="application/json", if_generation_match=token or 0)
        except Exception as exc:
            if _lost_race(exc):
                return False, None
            raise
        return True, blob.generation


def _is_precondition(exc: Exception) -> bool:
    return type(exc).__name__ == "PreconditionFailed" or getattr(exc, "code", None) == 412


def _lost_race(exc: BaseException) -> bool:
    """Another writer got there between our read and our write: the object was replaced (412) or removed
    (404)."""
    return _is_precondition(exc) or type(exc).__name__ == "NotFound"


class FsspecLeaseStore:
    """Any other fsspec filesystem: read-compare-write with no lock (advisory)."""

    atomic = False

    def __init__(self, url: str):
        self.fs, self.path = fsspec.core.url_to_fs(url)

    def read(self) -> tuple[bytes, object] | None:
        try:
            data = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        return data, data

    def swap(self, token: object | None, data: bytes | None) -> tuple[bool, object | None]:
        current = self.read()
        if (current[1] if current else None) != token:
            return False, None
        if data is None:
            self.fs.rm_file(self.path)
        else:
            self.fs.pipe_file(self.path, data)
        return True, data


def lease_path(output: str) -> str:
    return posixpath.join(output.rstrip("/"), LEASE_NAME)


def store_for(output: str) -> LeaseStore:
    path = lease_path(output)
    protocol = fsspec.core.split_protocol(path)[0] or "file"
    if protocol in ("file", "local"):
        return LocalLeaseStore(fsspec.core.url_to_fs(path)[1])
    if protocol in ("gs", "gcs"):
        return GcsLeaseStore("gs://" + path.split("://", 1)[1])
    return FsspecLeaseStore(path)


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


class OutputLease:
    """The lease of one output folder, as seen by the run that wants it or holds it."""

    def __init__(
        self,
        output: str,
        store: LeaseStore | None = None,
        stale_after_s: float = STALE_AFTER_S,
        clock: Callable[[], float] = time.time,
        host: str | None = None,
    ):
        self.output = output
        self.store = store or store_for(output)
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.host = host or socket.gethostname()
        self.held: Lease | None = None
        self.lost: str | None = None
        self.taken_over: Lease | None = None  # the stale lease this run replaced, if any
        self._token: object | None = None

    def acquire(self, config_digest: str, run_id: str | None = None, take_over: bool = False) -> Lease:
        """Take the folder, or raise LeaseHeld naming the live holder. Retries only when the lease
        changed under us between reading and swapping (another run raced us)."""
        if not self.store.atomic:
            log.warning("the output lease on %s is advisory: this filesystem has no atomic swap", self.output)
        now = self.clock()
        mine = Lease(run_id or new_run_id(), self.host, os.getpid(), now, now, config_digest)
        for _ in range(5):
            current = self.store.read()
            if current is not None:
                data, token = current
                try:
                    holder = Lease.from_bytes(data)
                except (ValueError, TypeError, KeyError):
                    holder = None  # a torn or foreign file: nobody can be protected by it
                reason = (
                    "it is unreadable" if holder is None else stale_reason(holder, now, self.host, self.stale_after_s)
                )
                if reason is None and not take_over:
                    raise LeaseHeld(
                        f"{self.output!r} is in use by {holder.describe(now)}; wait for it to end, write "
                        f"elsewhere, or pass --take_over_lease true if that run is gone"
                    )
                if holder is not None:
                    log.warning(
                        "taking over the output lease of %s: %s",
                        holder.describe(now),
                        reason or "--take_over_lease",
                    )
                self.taken_over = holder
            else:
                token = None
            done, new_token = self.store.swap(token, mine.to_bytes())
            if done:
                self.held, self._token = mine, new_token
                return mine
        raise LeaseHeld(f"{self.output!r}: the lease keeps changing under this run; another run is starting there")

    def _update(self, lease: Lease | None) -> bool:
        """Swap this run's own version of the lease for ``lease`` (None: give it back)."""
        done, new_token = self.store.swap(self._token, None if lease is None else lease.to_bytes())
        if not done:
            self.lost = self.lost or "the lease was taken over by another run"
            self.held = None
            return False
        self._token, self.held = new_token, lease
        return True

    def renew(self) -> bool:
        """Heartbeat; False (and ``lost`` set) when the lease is no longer this run's."""
        if self.held is None:
            return False
        return self._update(replace(self.held, heartbeat=self.clock()))

    def mark_submitted(self, job_id: str | None) -> bool:
        """The launcher leaves: the job holds the lease until its last step releases it."""
        if self.held is None:
            return False
        return self._update(replace(self.held, mode=SUBMITTED, job_id=job_id, heartbeat=self.clock()))

    def release(self) -> bool:
        if self.held is None:
            return False
        return self._update(None)

    @contextlib.contextmanager
    def heartbeat(self, every_s: float = HEARTBEAT_S) -> Iterator[None]:
        """Renew the lease in a thread while the block runs (the launcher waiting for its job)."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(every_s):
                if not self.renew():
                    log.error("vesl: %s: lost the output lease; this run will not commit more shards", self.output)
                    return

        thread = threading.Thread(target=beat, name="vesl-lease-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=every_s + 5)


def read_lease(output: str) -> Lease | None:
    """The folder's lease as its store holds it now (None: absent or unreadable). Read through the lease
    store, never through fsspec's cached listings: gcsfs sizes an object from a cached listing of its
    folder (kept for the life of the process), so a lease rewritten since (a heartbeat, a takeover) came
    back cut short, unreadable, and the fence took the holder's own run for usurped."""
    current = store_for(output).read()
    if current is None:
        return None
    try:
        return Lease.from_bytes(current[0])
    except (ValueError, TypeError, KeyError):
        return None


def check_holder(output: str, run_id: str) -> None:
    """The fence before a commit: raise LeaseLost unless the folder's lease still names ``run_id``."""
    lease = read_lease(output)
    if lease is None or lease.run_id != run_id:
        holder = "nobody" if lease is None else f"run {lease.run_id} on {lease.host}"
        raise LeaseLost(f"{output!r}: this run ({run_id}) no longer holds the output lease (held by {holder})")


def release_if_held(output: str, run_id: str) -> bool:
    """The last step of a submitted job: give the lease back if it is still this run's."""
    store = store_for(output)
    current = store.read()
    if current is None:
        return False
    try:
        holder = Lease.from_bytes(current[0])
    except (ValueError, TypeError, KeyError):
        return False
    return holder.run_id == run_id and store.swap(current[1], None)[0]
