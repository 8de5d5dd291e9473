"""How the PyTorch reader splits an epoch over distributed ranks x DataLoader workers, with files of
unequal row counts and several row groups: every rank gets the same number of images (DDP steps in
lockstep), no image is read twice, the remainder rule is the documented one, and epochs reshuffle,
also with persistent workers (checked with a real DataLoader)."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vesl.training.torch_dataset import VeslRegionDataset, plan_rows


def keys_of(groups, slices) -> list[str]:
    return [f"{path}:{group}:{row}" for path, group, lo, hi in slices for row in range(lo, hi)]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 9), min_size=1, max_size=12),
    st.integers(1, 5),
    st.integers(1, 4),
    st.integers(0, 3),
    st.sampled_from(["drop", "pad"]),
)
def test_every_rank_gets_the_same_count_and_no_image_twice(rows, world_size, workers, epoch, remainder):
    groups = [(f"f{i % 3}", i, n) for i, n in enumerate(rows)]
    total = sum(rows)
    per_rank = []
    seen: Counter[str] = Counter()
    for rank in range(world_size):
        count = 0
        worker_counts = []
        for worker in range(workers):
            slices = plan_rows(groups, 7, epoch, rank, world_size, worker, workers, remainder)
            assert all(0 <= lo < hi <= dict(((g[0], g[1]), g[2]) for g in groups)[(p, g)] for p, g, lo, hi in slices)
            keys = keys_of(groups, slices)
            seen.update(keys)
            worker_counts.append(len(keys))
            count += len(keys)
        assert max(worker_counts) - min(worker_counts) <= 1
        per_rank.append(count)
    assert len(set(per_rank)) == 1  # lockstep
    if remainder == "drop":
        assert per_rank[0] == total // world_size and max(seen.values(), default=1) == 1
        assert len(seen) == world_size * (total // world_size)  # only the remainder is left out
    else:
        assert per_rank[0] == -(-total // world_size) and len(seen) == total  # everything, some twice
        assert sum(seen.values()) - total == world_size * per_rank[0] - total


def test_the_dropped_remainder_changes_with_the_epoch():
    groups = [("a", 0, 5), ("b", 0, 3), ("c", 0, 3)]  # 11 rows over 2 ranks: 1 left out per epoch
    left_out = set()
    for epoch in range(12):
        read = {k for rank in range(2) for k in keys_of(groups, plan_rows(groups, 0, epoch, rank, 2))}
        (missing,) = {f"{p}:{g}:{r}" for p, g, n in groups for r in range(n)} - read
        left_out.add(missing)
    assert len(left_out) > 1


@pytest.fixture
def files(tmp_path, photo_samples):
    """3 files of unequal row counts (7, 2 and 4 rows) in row groups of 3, 2 and 1 rows."""
    from vesl.vision.decode import decode_image

    photo = photo_samples[0]
    width, height = decode_image(photo.image, 10**8).image.size
    region = {"phrase": "a rocket", "box": [0.1, 0.1, 0.5, 0.5], "score": 0.9}
    paths = []
    for i, (n, group_rows) in enumerate(((7, 3), (2, 2), (4, 1))):
        table = pa.table(
            {
                "key": [f"{i}-{r}" for r in range(n)],
                "caption": [photo.caption] * n,
                "width": [width] * n,
                "height": [height] * n,
                "regions": [[region]] * n,
                "image": [photo.image] * n,
            }
        )
        path = tmp_path / f"part-{i}.parquet"
        pq.write_table(table, path, row_group_size=group_rows)
        paths.append(str(path))
    return paths


def run_epochs(files, rank, world_size, epochs, persistent):
    from torch.utils.data import DataLoader

    from vesl.training.torch_dataset import collate_regions

    dataset = VeslRegionDataset(files, size=32, rank=rank, world_size=world_size, seed=5, shuffle_buffer=1)
    loader = DataLoader(
        dataset, batch_size=2, num_workers=2, collate_fn=collate_regions, persistent_workers=persistent,
        multiprocessing_context="fork",
    )  # fmt: skip
    out = []
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        out.append([key for batch in loader for key in batch["key"]])
    return out


@pytest.mark.parametrize("persistent", [False, True])
def test_dataloader_ranks_and_workers_read_each_image_once_and_reshuffle(files, persistent):
    all_keys = {f"{i}-{r}" for i, n in enumerate((7, 2, 4)) for r in range(n)}  # 13 images
    ranks = [run_epochs(files, rank, 2, 2, persistent) for rank in range(2)]
    for epoch in range(2):
        per_rank = [ranks[rank][epoch] for rank in range(2)]
        assert [len(keys) for keys in per_rank] == [6, 6]  # 13 // 2 each; one image left out this epoch
        read = per_rank[0] + per_rank[1]
        assert len(read) == len(set(read)) == 12 and set(read) <= all_keys
    assert ranks[0][0] != ranks[0][1]  # epoch 1 is not epoch 0 again, persistent workers or not
