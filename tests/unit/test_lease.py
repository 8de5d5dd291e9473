"""The output lease: one live owner per folder, stale leases taken over, and no two racing runs
both winning (compare-and-swap on a real local filesystem, across real processes)."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from vesl.io.lease import (
    LEASE_NAME,
    STALE_AFTER_S,
    SUBMITTED,
    GcsLeaseStore,
    Lease,
    LeaseHeld,
    LeaseLost,
    LocalLeaseStore,
    OutputLease,
    check_holder,
    read_lease,
    release_if_held,
    stale_reason,
)


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_acquire_writes_who_holds_the_folder(tmp_path):
    lease = OutputLease(str(tmp_path), clock=Clock())
    held = lease.acquire("digest-a")
    on_disk = json.loads((tmp_path / LEASE_NAME).read_text())
    assert on_disk["run_id"] == held.run_id
    assert on_disk["host"] == socket.gethostname() and on_disk["pid"] == os.getpid()
    assert on_disk["started"] == on_disk["heartbeat"] == 1_000_000.0
    assert on_disk["config_digest"] == "digest-a" and on_disk["mode"] == "attended"


def test_a_live_lease_refuses_a_second_run_with_one_line_naming_the_holder(tmp_path):
    clock = Clock()
    first = OutputLease(str(tmp_path), clock=clock)
    held = first.acquire("a")
    clock.now += STALE_AFTER_S - 1  # not yet stale, even without a heartbeat
    with pytest.raises(LeaseHeld) as raised:
        OutputLease(str(tmp_path), clock=clock).acquire("b")
    message = str(raised.value)
    assert "\n" not in message and held.run_id in message and "--take_over_lease" in message
    assert read_lease(str(tmp_path)).run_id == held.run_id  # untouched


def test_heartbeats_keep_a_lease_alive_and_silence_makes_it_stale(tmp_path):
    clock = Clock()
    first = OutputLease(str(tmp_path), clock=clock)
    old_run = first.acquire("a").run_id
    for _ in range(3):
        clock.now += STALE_AFTER_S - 1
        assert first.renew()
        with pytest.raises(LeaseHeld):
            OutputLease(str(tmp_path), clock=clock).acquire("b")
    clock.now += STALE_AFTER_S + 1
    second = OutputLease(str(tmp_path), clock=clock)
    taken = second.acquire("b")
    assert second.taken_over.run_id == old_run
    assert read_lease(str(tmp_path)).run_id == taken.run_id
    # The old holder wakes up: its heartbeat fails, its commits are fenced off, it cannot release.
    assert not first.renew() and first.lost
    with pytest.raises(LeaseLost):
        check_holder(str(tmp_path), old_run)
    assert not first.release()
    check_holder(str(tmp_path), taken.run_id)
    assert read_lease(str(tmp_path)).run_id == taken.run_id


def test_a_lease_whose_process_died_on_this_host_is_taken_over_at_once(tmp_path):
    clock = Clock()
    lease = Lease("dead-run", socket.gethostname(), dead_pid(), clock.now, clock.now, "a")
    (tmp_path / LEASE_NAME).write_bytes(lease.to_bytes())
    taker = OutputLease(str(tmp_path), clock=clock)
    taker.acquire("a")
    assert taker.taken_over.run_id == "dead-run"


def test_another_hosts_lease_is_judged_by_its_heartbeat_only(tmp_path):
    clock = Clock()
    lease = Lease("remote", "some-other-host", dead_pid(), clock.now, clock.now, "a")
    assert stale_reason(lease, clock.now + 10, socket.gethostname()) is None
    assert "heartbeat" in stale_reason(lease, clock.now + STALE_AFTER_S + 1, socket.gethostname())


def test_a_submitted_job_holds_the_folder_until_released_or_taken_over_explicitly(tmp_path):
    clock = Clock()
    launcher = OutputLease(str(tmp_path), clock=clock, host="launcher-host")
    held = launcher.acquire("a")
    assert launcher.mark_submitted("job-42")
    clock.now += 30 * 24 * 3600  # a month without heartbeats: a job is not judged by them
    with pytest.raises(LeaseHeld, match="job-42"):
        OutputLease(str(tmp_path), clock=clock).acquire("a")
    assert read_lease(str(tmp_path)).mode == SUBMITTED
    assert not release_if_held(str(tmp_path), "someone-else")
    assert release_if_held(str(tmp_path), held.run_id)  # the job's last step
    assert not (tmp_path / LEASE_NAME).exists()
    launcher2 = OutputLease(str(tmp_path), clock=clock, host="launcher-host")
    launcher2.acquire("a")
    launcher2.mark_submitted("job-43")
    taker = OutputLease(str(tmp_path), clock=clock)
    taker.acquire("a", take_over=True)
    assert taker.taken_over.job_id == "job-43"


def test_an_unreadable_lease_file_protects_nobody(tmp_path):
    (tmp_path / LEASE_NAME).write_bytes(b'{"run_id": "torn')
    taker = OutputLease(str(tmp_path))
    held = taker.acquire("a")
    assert read_lease(str(tmp_path)).run_id == held.run_id


def test_release_gives_the_folder_back(tmp_path):
    lease = OutputLease(str(tmp_path))
    lease.acquire("a")
    assert lease.release()
    assert not (tmp_path / LEASE_NAME).exists()
    OutputLease(str(tmp_path)).acquire("b")


class RacingStore(LocalLeaseStore):
    """Lets a rival run take the lease between this run's read and its swap."""

    def __init__(self, path, rival):
        super().__init__(path)
        self.rival = rival

    def read(self):
        current = super().read()
        if self.rival is not None:
            rival, self.rival = self.rival, None
            rival()
        return current


@pytest.mark.parametrize("stale_first", [False, True])
def test_two_runs_racing_for_a_free_or_stale_folder_cannot_both_win(tmp_path, stale_first):
    clock = Clock()
    if stale_first:
        old = Lease("stale", "other-host", 1, clock.now - 10 * STALE_AFTER_S, clock.now - 10 * STALE_AFTER_S, "a")
        (tmp_path / LEASE_NAME).write_bytes(old.to_bytes())
    rival = OutputLease(str(tmp_path), clock=clock)
    path = str(tmp_path / LEASE_NAME)
    loser = OutputLease(str(tmp_path), store=RacingStore(path, lambda: rival.acquire("b")), clock=clock)
    with pytest.raises(LeaseHeld):  # its swap fails, it reads again and finds the rival live
        loser.acquire("a")
    assert read_lease(str(tmp_path)).run_id == rival.held.run_id


def _bump(path: str, times: int, barrier) -> None:
    store = LocalLeaseStore(path)
    barrier.wait()
    for _ in range(times):
        while True:
            current = store.read()
            value = int(current[0]) if current else 0
            if store.swap(current[1] if current else None, str(value + 1).encode())[0]:
                break


def test_local_compare_and_swap_loses_no_update_across_processes(tmp_path):
    path = str(tmp_path / "counter")
    processes, times = 4, 100
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes)
    workers = [context.Process(target=_bump, args=(path, times, barrier)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert all(worker.exitcode == 0 for worker in workers)
    assert int(Path(path).read_text()) == processes * times


def _acquire(output: str, barrier, results) -> None:
    barrier.wait()
    try:
        results.put(OutputLease(output).acquire("a").run_id)
    except LeaseHeld:
        results.put(None)


def test_of_many_processes_starting_on_one_folder_exactly_one_gets_it(tmp_path):
    context = multiprocessing.get_context("fork")
    n = 6
    barrier, results = context.Barrier(n), context.Queue()
    workers = [context.Process(target=_acquire, args=(str(tmp_path), barrier, results)) for _ in range(n)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=60) for _ in range(n)]
    for worker in workers:
        worker.join(60)
    winners = [o for o in outcomes if o]
    # Each winner's process has exited by now, so the one lease names a dead pid; what matters is
    # that only one run ever held it.
    assert len(winners) == 1 and read_lease(str(tmp_path)).run_id == winners[0]


class FakeBlob:
    """google-cloud-storage's Blob contract for generation preconditions (no GCS is reachable here)."""

    def __init__(self, bucket, name):
        self.bucket, self.name, self.generation = bucket, name, None

    def download_as_bytes(self, if_generation_match=None):
        data, generation = self.bucket.objects[self.name]
        if if_generation_match is not None and if_generation_match != generation:
            raise PreconditionFailed()
        return data

    def upload_from_string(self, data, content_type=None, if_generation_match=None):
        current = self.bucket.objects.get(self.name)
        if if_generation_match is not None and if_generation_match != (current[1] if current else 0):
            raise PreconditionFailed()
        self.bucket.generation += 1
        self.bucket.objects[self.name] = (data, self.bucket.generation)
        self.generation = self.bucket.generation

    def delete(self, if_generation_match=None):
        current = self.bucket.objects.get(self.name)
        if current is None:
            raise type("NotFound", (Exception,), {})()
        if if_generation_match is not None and if_generation_match != current[1]:
            raise PreconditionFailed()
        del self.bucket.objects[self.name]


class PreconditionFailed(Exception):
    code = 412


class FakeBucket:
    def __init__(self):
        self.objects, self.generation = {}, 0

    def blob(self, name):
        return FakeBlob(self, name)

    def get_blob(self, name):
        if name not in self.objects:
            return None
        blob = FakeBlob(self, name)
        blob.generation = self.objects[name][1]
        return blob


class FakeClient:
    def __init__(self):
        self.the_bucket = FakeBucket()

    def bucket(self, name):
        return self.the_bucket


def test_gcs_store_swaps_only_the_generation_it_read():
    pytest.importorskip("google.cloud.storage")
    client = FakeClient()
    store = GcsLeaseStore("gs://b/out/_lease.json", client=client)
    assert store.read() is None
    assert store.swap(None, b"one")[0]
    assert not store.swap(None, b"again")[0]  # must-not-exist fails once it exists
    data, generation = store.read()
    assert data == b"one"
    done, new_generation = store.swap(generation, b"two")
    assert done and new_generation != generation
    assert not store.swap(generation, b"three")[0]  # an old generation loses
    assert store.read()[0] == b"two"
    assert not store.swap(generation, None)[0] and store.swap(new_generation, None)[0]
    assert store.read() is None


def test_lease_over_gcs_store_refuses_a_second_run():
    pytest.importorskip("google.cloud.storage")
    client = FakeClient()
    first = OutputLease("gs://b/out", store=GcsLeaseStore("gs://b/out/_lease.json", client=client))
    first.acquire("a")
    assert first.renew()
    with pytest.raises(LeaseHeld):
        OutputLease("gs://b/out", store=GcsLeaseStore("gs://b/out/_lease.json", client=client)).acquire("a")
    assert first.release() and client.the_bucket.objects == {}


def test_each_run_writes_its_temporary_files_in_its_own_folder():
    from vesl.io.layout import OutputLayout

    a, b = OutputLayout("gs://b/out", run_id="run-a"), OutputLayout("gs://b/out", run_id="run-b")
    assert a.temp_dir("parquet") == "gs://b/out/_temporary/run-a/parquet"
    assert a.temp_parent == b.temp_parent == "gs://b/out/_temporary"
    assert not b.temp_root.startswith(a.temp_root)


def test_the_heartbeat_thread_renews_and_notices_a_takeover(tmp_path):
    import time

    lease = OutputLease(str(tmp_path))
    lease.acquire("a")
    first = read_lease(str(tmp_path)).heartbeat
    with lease.heartbeat(every_s=0.05):
        time.sleep(0.3)
        assert read_lease(str(tmp_path)).heartbeat > first
        now = time.time()
        (tmp_path / LEASE_NAME).write_bytes(Lease("usurper", "elsewhere", 1, now, now, "b").to_bytes())
        time.sleep(0.3)
    assert lease.lost and read_lease(str(tmp_path)).run_id == "usurper"
