"""How the PyTorch reader splits work over distributed ranks x DataLoader workers: every (rank,
worker) pair is its own reader, and over all readers every unit (a file, or a row group when there
are fewer files than readers) is read exactly once, in every epoch."""

from __future__ import annotations

from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vesl.training import torch_dataset
from vesl.training.torch_dataset import VeslRegionDataset


@pytest.fixture
def files(tmp_path):
    """3 Parquet files of 4, 1 and 6 row groups."""
    paths = []
    for i, groups in enumerate((4, 1, 6)):
        path = tmp_path / f"part-{i}.parquet"
        with pq.ParquetWriter(path, pa.schema([("key", pa.string())])) as writer:
            for g in range(groups):
                writer.write_table(pa.table({"key": [f"{i}-{g}-{r}" for r in range(2)]}))
        paths.append(str(path))
    return paths


def units_of_every_reader(files, world_size, workers, epoch, monkeypatch):
    seen = {}
    for rank in range(world_size):
        for worker in range(workers):
            info = SimpleNamespace(num_workers=workers, id=worker) if workers > 1 else None
            monkeypatch.setattr(torch_dataset, "get_worker_info", lambda info=info: info)
            dataset = VeslRegionDataset(files, rank=rank, world_size=world_size, seed=3)
            dataset.set_epoch(epoch)
            seen[(rank, worker)] = dataset.my_units()
    return seen


@pytest.mark.parametrize("world_size,workers", [(1, 1), (1, 2), (2, 1), (2, 2), (3, 2), (2, 4)])
def test_each_unit_is_read_by_exactly_one_reader(files, world_size, workers, monkeypatch):
    for epoch in (0, 1):
        seen = units_of_every_reader(files, world_size, workers, epoch, monkeypatch)
        units = [u for per_reader in seen.values() for u in per_reader]
        assert len(units) == len(set(units))
        readers = world_size * workers
        if len(files) >= readers:  # whole files
            assert sorted(units) == sorted((f, None) for f in files)
        else:  # row groups: 11 of them
            assert sorted(units) == sorted((f, g) for f, n in zip(files, (4, 1, 6)) for g in range(n))
        if readers <= 11:
            assert all(seen.values()), "a reader without work while units are left"


def test_reader_slots_are_distinct_for_every_rank_and_worker(monkeypatch):
    slots = set()
    for rank in range(3):
        for worker in range(4):
            info = SimpleNamespace(num_workers=4, id=worker)
            monkeypatch.setattr(torch_dataset, "get_worker_info", lambda info=info: info)
            slots.add(torch_dataset._reader_slot(rank, 3))
    assert slots == {(s, 12) for s in range(12)}


def test_epochs_reshuffle_the_assignment(files, monkeypatch):
    first = units_of_every_reader(files, 2, 2, 0, monkeypatch)
    second = units_of_every_reader(files, 2, 2, 1, monkeypatch)
    assert first != second
    assert units_of_every_reader(files, 2, 2, 0, monkeypatch) == first  # deterministic per epoch
