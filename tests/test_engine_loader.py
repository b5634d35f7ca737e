"""Data-loader workers draw what the release's seeded workers draw."""
import random
from types import SimpleNamespace

import numpy as np
import torch

from engine.loader import build_loader


class Draws(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        info = torch.utils.data.get_worker_info()
        return info.seed, np.random.randint(2 ** 31), random.random(), torch.get_num_threads()


def test_workers_seed_numpy_and_random_as_the_release_does():
    # torch seeds each worker's torch and random with base seed + worker id, and numpy from a hash
    # of the two; the workers here re-seed numpy and random with that seed mod 2^32, as the
    # release's seed_worker does, and use one torch thread.
    args = SimpleNamespace(seed=0, num_workers=2, batch_size=1, pin_mem=False, device="cpu", dist_eval=False)
    torch.manual_seed(3)
    loader = build_loader(Draws(), args, train=False, collate_fn=lambda items: items[0])
    seen = list(loader)
    assert len({s for s, *_ in seen}) == 2  # one seed per worker
    for seed, np_draw, py_draw, threads in seen:
        assert np_draw == np.random.RandomState(seed % 2 ** 32).randint(2 ** 31)
        assert py_draw == random.Random(seed % 2 ** 32).random()
        assert threads == 1
