"""gs:// end to end against a real GCS JSON API: fake-gcs-server (``tests/gcs_emulator.py``), reached by
the real clients (google-cloud-storage for the lease and Beam's file sinks, gcsfs for reading and listing)
and VESL's real code. Elsewhere gs:// only meets in-memory stand-ins; here the read/write/resume path
and the lease's compare-and-swap (``ifGenerationMatch``) meet the API itself. A stale conditional upload
is answered 412 by the emulator; a stale conditional delete or read by the proxy in front of it, since
fake-gcs-server 1.54 ignores the condition there (``tests/gcs_emulator.py``). Skipped, saying why,
where the emulator cannot run."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest

from bench.faults import start_like_a_terminal
from pipelines.vesl import UsageError, run
from tests.gcs_emulator import EmulatorUnavailable, GcsEmulator
from tests.runs import vesl_command
from vesl.io.lease import LEASE_NAME, GcsLeaseStore, LeaseHeld, LeaseLost, OutputLease, check_holder, read_lease
from vesl.sample import build_sample

pytestmark = pytest.mark.slow
N_SHARDS = 3  # vesl.sample: two webdataset shards and one img2dataset parquet shard


@pytest.fixture(scope="module")
def gcs() -> Iterator[GcsEmulator]:
    """fake-gcs-server in memory on a free 127.0.0.1 port, one bucket, every client of this process pointed
    at it for the module (child processes get ``gcs.env()``)."""
    emulator = GcsEmulator()
    try:
        emulator.start()
    except EmulatorUnavailable as exc:
        emulator.close()
        pytest.skip(f"the GCS emulator cannot run on this machine: {exc}")
    try:
        with emulator.configured():
            yield emulator
    finally:
        emulator.close()


def gcs_fs() -> fsspec.AbstractFileSystem:
    """gcsfs, without the listings it cached earlier (other processes write the bucket too)."""
    fs = fsspec.filesystem("gs")
    fs.invalidate_cache()
    return fs


def argv(inputs: str, out: str, checkpoint: str, *extra: str) -> list[str]:
    return [
        *("--input", inputs, "--output", out, "--checkpoint", checkpoint, "--image_size", "64"),
        *("--batch_size", "2", "--score_threshold", "0", "--max_candidates", "3", "--progress", "false"),
        *extra,
    ]


@pytest.fixture(scope="module")
def local_input(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gcs-e2e") / "input"
    build_sample(root)
    return root


@pytest.fixture(scope="module")
def gcs_input(gcs, local_input) -> str:
    """The sample shards, webdataset and parquet, uploaded with gcsfs."""
    fs = gcs_fs()
    for path in sorted(local_input.iterdir()):
        fs.put_file(str(path), f"{gcs.bucket}/input/{path.name}")
    assert sorted(posixpath.basename(p) for p in fs.ls(f"{gcs.bucket}/input")) == sorted(
        p.name for p in local_input.iterdir()
    )
    return f"gs://{gcs.bucket}/input"


class Storage:
    """Reads an output folder, local or gs://, through fsspec (gcsfs for gs://)."""

    def __init__(self, out: str):
        self.out = out.rstrip("/")
        self.fs = gcs_fs() if out.startswith("gs://") else fsspec.filesystem("file")
        self.root = fsspec.core.url_to_fs(out)[1].rstrip("/")

    def files(self, folder: str) -> list[str]:
        return sorted(self.fs.glob(f"{self.root}/{folder}/*"))

    def read(self, path: str) -> bytes:
        return self.fs.cat_file(path)

    def exists(self, name: str) -> bool:
        return self.fs.exists(f"{self.root}/{name}")


def snapshot(out: str) -> dict:
    """Everything a consumer reads, independent of file order, of the run that wrote it and of where its
    input was (``source_shard`` and the rejects name the input file: compared by file name)."""
    storage = Storage(out)
    rows = {}
    for path in storage.files("parquet"):
        with storage.fs.open(path, "rb") as f:
            for row in pq.read_table(f).to_pylist():
                row["image"] = hashlib.sha256(row["image"] or b"").hexdigest()
                row["source_shard"] = posixpath.basename(row["source_shard"])
                rows[row["key"]] = json.dumps(row, sort_keys=True, default=str)
    rejects = []
    for path in storage.files("rejects"):
        for line in storage.read(path).decode().splitlines():
            reject = json.loads(line)
            rejects.append(json.dumps(normalise_paths(reject), sort_keys=True))
    summary = json.loads(storage.read(f"{storage.root}/summary.json"))
    return {
        "rows": rows,
        "rejects": sorted(rejects),
        "counts": summary["counts"],
        "tfrecords": {shard_name(p): len(storage.read(p)) > 0 for p in storage.files("tfrecord")},
        "shards": sorted(shard_name(p) for p in storage.files("stats")),
    }


def normalise_paths(value: object) -> object:
    """Input paths (local or gs://) -> their file names, wherever they appear in a reject."""
    if isinstance(value, dict):
        return {k: normalise_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise_paths(v) for v in value]
    if isinstance(value, str) and ("/input/" in value):
        return posixpath.basename(value)
    return value


def shard_name(path: str) -> str:
    """``sample-00001-732548a7.json`` -> ``sample-00001``: the shard id less the hash of its input's full path."""
    return posixpath.basename(path).split(".")[0].rsplit("-", 1)[0]


@pytest.fixture(scope="module")
def local_run(local_input, tiny_checkpoint) -> dict:
    out = local_input.parent / "local-out"
    run(argv(str(local_input), str(out), tiny_checkpoint, "--runner", "FnApiRunner"))
    return snapshot(str(out))


@pytest.fixture(scope="module")
def gcs_run(gcs, gcs_input, tiny_checkpoint) -> dict:
    out = f"gs://{gcs.bucket}/clean"
    batches_before = gcs.proxy.batch_requests
    summary = run(argv(gcs_input, out, tiny_checkpoint, "--runner", "FnApiRunner"))
    # Beam's gcsio (fileio.WriteToFiles, FileSystems.rename) copied and deleted through the batch API:
    # the writer stage really went through Beam's own GCS filesystem, not a local fallback
    assert gcs.proxy.batch_requests > batches_before
    assert summary["outputs"]["parquet"].startswith(out)
    return {"summary": summary, **snapshot(out)}


def test_a_run_from_gs_to_gs_equals_a_local_run(gcs, gcs_run, local_run):
    counts = gcs_run["counts"]
    assert counts["balanced"] and counts["shards"] == N_SHARDS and counts["written"] > 0
    assert gcs_run["summary"]["input_shards"] == N_SHARDS
    assert any(json.loads(row)["regions"] for row in gcs_run["rows"].values())  # boxes and scores compared too
    for key in ("rows", "rejects", "counts", "tfrecords", "shards"):
        assert gcs_run[key] == local_run[key], key
    storage = Storage(f"gs://{gcs.bucket}/clean")
    assert not storage.exists(LEASE_NAME) and not storage.exists("_temporary")  # given back, cleaned up
    digest = gcs_run["summary"]["provenance"]["config_digest"]
    assert json.loads(storage.read(f"{storage.root}/_config.json"))["config_digest"] == digest
    # the parquet input (an img2dataset parquet shard) and the webdataset shards were both read from gs://
    assert {json.loads(r)["source_shard"].rsplit(".", 1)[-1] for r in gcs_run["rows"].values()} == {"tar", "parquet"}


def start(command_argv: list[str], gcs: GcsEmulator, delay_s: float, *runner: str) -> subprocess.Popen:
    """``python -m pipelines.vesl`` in its own session (so the test can kill it and its workers), talking
    to the emulator, each shard commit held ``delay_s`` (VESL's fault injection for these tests)."""
    env = {**os.environ, **gcs.env(), "VESL_TEST_COMMIT_DELAY_S": str(delay_s)}
    return start_like_a_terminal(vesl_command(*command_argv, *runner), env)


def wait_for(predicate: Callable[[], bool], process: subprocess.Popen, timeout_s: float = 240) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline and process.poll() is None and not predicate():
        time.sleep(0.05)
    assert process.poll() is None, f"the run ended early: {process.communicate()}"
    assert predicate()


def kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)


def committed(out: str) -> int:
    return len(Storage(out).files("stats"))


def test_a_run_killed_midway_on_gs_resumes_to_the_clean_result(gcs, gcs_input, gcs_run, tiny_checkpoint):
    out = f"gs://{gcs.bucket}/killed"
    workers = ("--runner", "DirectRunner", "--direct_num_workers", "2", "--direct_running_mode", "multi_processing")
    # each commit held 3 s: with 3 shards and 2 workers, the last one cannot be committed yet when the first is seen
    process = start(argv(gcs_input, out, tiny_checkpoint), gcs, 3.0, *workers)
    try:
        wait_for(lambda: committed(out) >= 1, process)
        os.killpg(process.pid, signal.SIGKILL)  # the driver and its worker processes, mid-commit
        process.wait(timeout=30)
    finally:
        kill(process)
    storage = Storage(out)
    left = committed(out)
    assert 1 <= left < N_SHARDS, f"the kill should leave some shards committed and some not ({left} of {N_SHARDS})"
    assert not storage.exists("summary.json")
    assert read_lease(out) is not None  # the killed run's lease: its process is gone, so it is stale

    summary = run(argv(gcs_input, out, tiny_checkpoint, "--runner", "FnApiRunner"))
    assert read_lease(out) is None and not Storage(out).exists("_temporary")
    again = snapshot(out)
    assert summary["counts"] == gcs_run["counts"]
    for key in ("rows", "rejects", "counts", "tfrecords", "shards"):
        assert again[key] == gcs_run[key], key  # nothing lost or doubled
    assert sorted(posixpath.basename(p) for p in Storage(out).files("stats")) == sorted(
        posixpath.basename(p) for p in Storage(f"gs://{gcs.bucket}/clean").files("stats")
    )  # the same shard ids: the same input files


def test_a_second_run_is_refused_while_a_live_run_holds_the_gs_folder(gcs, gcs_input, tiny_checkpoint):
    out = f"gs://{gcs.bucket}/live"
    holder_process = start(argv(gcs_input, out, tiny_checkpoint, "--runner", "FnApiRunner"), gcs, 1.0)
    try:
        wait_for(lambda: read_lease(out) is not None, holder_process)
        holder = read_lease(out)
        for threshold in ("0.5", "0"):  # other options, then identical ones: both refused
            with pytest.raises(UsageError) as refused:
                run(argv(gcs_input, out, tiny_checkpoint, "--runner", "FnApiRunner", "--score_threshold", threshold))
            message = str(refused.value)
            assert "\n" not in message and f"in use by run {holder.run_id} on {holder.host}" in message
        assert read_lease(out).run_id == holder.run_id  # the refused runs left the holder's lease alone
        _, stderr = holder_process.communicate(timeout=300)
    finally:
        kill(holder_process)
    assert holder_process.returncode == 0, stderr
    summary = json.loads(Storage(out).read(f"{Storage(out).root}/summary.json"))
    assert summary["counts"]["shards"] == N_SHARDS and summary["counts"]["balanced"]
    assert read_lease(out) is None and not Storage(out).exists("_temporary")


def test_a_run_whose_gs_lease_was_taken_over_commits_nothing_more(gcs, gcs_input, tiny_checkpoint):
    out = f"gs://{gcs.bucket}/usurped"
    victim = start(argv(gcs_input, out, tiny_checkpoint, "--runner", "FnApiRunner"), gcs, 2.0)
    try:
        wait_for(lambda: committed(out) >= 1, victim)
        # another run judged the victim dead and took the folder, through the generation compare-and-swap
        usurper = OutputLease(out, host="another-host")
        usurper.acquire("usurper-digest", take_over=True)
        at_takeover = committed(out)
        _, stderr = victim.communicate(timeout=300)
    finally:
        kill(victim)
    assert victim.returncode == 1, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("vesl: error: ") and "lease" in last
    assert committed(out) == at_takeover < N_SHARDS  # the shard in flight was fenced off too
    assert not Storage(out).exists("summary.json")
    # the victim's release was a delete conditional on its own generation: the usurper's lease stands
    holder = read_lease(out)
    assert holder is not None and holder.run_id == usurper.held.run_id, "the victim gave back a lease not its own"
    assert usurper.release() and read_lease(out) is None


class RacingStore(GcsLeaseStore):
    """The real store, but the first read of every contestant waits for all of them: every run sees the
    folder free, so only the swap's ``ifGenerationMatch=0`` can keep them from all winning."""

    def __init__(self, url: str, barrier: threading.Barrier):
        super().__init__(url)  # a client of its own per contestant, as separate runs have
        self.barrier = barrier
        self.first = True

    def read(self):
        current = super().read()
        if self.first:
            self.first = False
            self.barrier.wait(timeout=60)
        return current


def test_runs_started_at_once_on_a_gs_folder_leave_exactly_one_winner(gcs):
    out = f"gs://{gcs.bucket}/race"
    n = 6
    barrier = threading.Barrier(n)
    outcomes: list[str | None] = [None] * n
    failures: list[BaseException] = []

    def contestant(i: int) -> None:
        lease = OutputLease(out, store=RacingStore(f"{out}/{LEASE_NAME}", barrier))
        try:
            outcomes[i] = lease.acquire("digest").run_id
        except LeaseHeld:
            outcomes[i] = None
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=contestant, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures
    winners = [o for o in outcomes if o]
    assert len(winners) == 1 and read_lease(out).run_id == winners[0]


def test_the_gs_lease_store_swaps_only_the_generation_it_read(gcs):
    """The compare-and-swap itself, against the server: a stale generation is answered 412 and loses."""
    from google.api_core.exceptions import PreconditionFailed
    from google.cloud import storage

    url = f"gs://{gcs.bucket}/cas/{LEASE_NAME}"
    store = GcsLeaseStore(url)
    assert store.read() is None
    assert store.swap(None, b"one")[0]
    assert not store.swap(None, b"again")[0]  # must-not-exist (generation 0) fails once it exists
    data, generation = store.read()
    assert data == b"one"
    done, new_generation = store.swap(generation, b"two")
    assert done and new_generation != generation
    blob = storage.Client().bucket(gcs.bucket).blob(f"cas/{LEASE_NAME}")
    answered_by_proxy = gcs.proxy.preconditions_failed
    with pytest.raises(PreconditionFailed) as stale:
        blob.upload_from_string(b"three", if_generation_match=generation)
    assert stale.value.code == 412 and gcs.proxy.preconditions_failed == answered_by_proxy  # the emulator's own
    assert not store.swap(generation, b"three")[0]  # an old generation loses, as the server said
    assert store.read()[0] == b"two"
    assert not store.swap(generation, None)[0]  # nor may it delete
    assert store.swap(new_generation, None)[0] and store.read() is None


class _Interfering:
    """A bucket whose ``get_blob`` lets another run change the object right after its metadata is read."""

    def __init__(self, bucket, change: Callable[[], None]):
        self.bucket, self.change = bucket, change

    def __getattr__(self, name):
        return getattr(self.bucket, name)

    def get_blob(self, name):
        blob = self.bucket.get_blob(name)
        if blob is not None and self.change is not None:
            change, self.change = self.change, None
            change()
        return blob


@pytest.mark.parametrize("change", ["replaced", "given back"])
def test_a_gs_lease_read_while_another_run_changes_it_reads_again(gcs, change):
    """Between reading the lease's generation and its bytes another run may swap (412) or release (404)
    it: the read starts over instead of failing the run (or its commit fence)."""
    url = f"gs://{gcs.bucket}/read-race-{change.replace(' ', '-')}/{LEASE_NAME}"
    other = GcsLeaseStore(url)
    assert other.swap(None, b"first")[0]
    _, generation = other.read()
    store = GcsLeaseStore(url)
    if change == "replaced":
        store.bucket = _Interfering(store.bucket, lambda: other.swap(generation, b"second"))
        data, token = store.read()
        assert data == b"second" and token == other.read()[1] != generation  # the bytes of the generation named
    else:
        store.bucket = _Interfering(store.bucket, lambda: other.swap(generation, None))
        assert store.read() is None


def test_the_commit_fence_reads_the_lease_fresh_after_a_listing_of_the_folder(gcs):
    """gcsfs keeps the listings it made for the life of the process and sizes objects from them: a
    lease rewritten since (here a heartbeat that made it longer) must still be read whole, or the fence
    takes the holder's own run for usurped."""
    out = f"gs://{gcs.bucket}/fence"
    clock = [1_000_000.0]
    lease = OutputLease(out, clock=lambda: clock[0])
    held = lease.acquire("digest")
    fs = fsspec.filesystem("gs")
    fs.ls(f"{gcs.bucket}/fence")  # e.g. an input folder inside the output folder, listed by the job
    clock[0] = 1_000_030.123456789
    assert lease.renew()
    again = read_lease(out)
    assert again is not None and again.run_id == held.run_id and again.heartbeat == clock[0]
    check_holder(out, held.run_id)  # no LeaseLost
    usurper = OutputLease(out, host="another-host")
    usurper.acquire("digest", take_over=True)
    with pytest.raises(LeaseLost):
        check_holder(out, held.run_id)
    assert not lease.renew() and not lease.release()  # its generation is gone: neither renews nor deletes
    assert read_lease(out).run_id == usurper.held.run_id


def test_a_rerun_listing_on_the_workers_keeps_every_committed_gs_shard(gcs, gcs_input, gcs_run, tiny_checkpoint):
    """``--list_shards workers``: the job lists the gs:// input (gcsfs) and the committed shards (Beam's
    ``fileio.MatchFiles`` over GCS); a folder whose shards are all committed is left as it is."""
    out = f"gs://{gcs.bucket}/clean"
    storage = Storage(out)
    before = {p: storage.fs.info(p)["generation"] for p in storage.files("stats")}
    summary = run(argv(gcs_input, out, tiny_checkpoint, "--runner", "FnApiRunner", "--list_shards", "workers"))
    assert summary["counts"] == gcs_run["counts"] and summary["input_shards"] == N_SHARDS
    storage = Storage(out)
    assert {p: storage.fs.info(p)["generation"] for p in storage.files("stats")} == before  # kept, not redone
    again = snapshot(out)
    for key in ("rows", "rejects", "counts", "tfrecords", "shards"):
        assert again[key] == gcs_run[key], key
    assert read_lease(out) is None
