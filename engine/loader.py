"""Data loaders: a training order fixed by (seed, epoch) that a stopped run resumes mid-epoch."""
import random

import numpy as np
import torch

from .distributed import get_rank, get_world_size, is_dist
from .interrupt import ignore_stop_signals


class EpochSampler(torch.utils.data.DistributedSampler):
    """This process's share of a permutation fixed by (seed, epoch), whatever the number of processes
    and of earlier runs; ``set_epoch(e, skip=n)`` starts the epoch after its first ``n`` samples, so a
    run stopped mid-epoch continues with exactly the samples it had not yet seen."""

    def __init__(self, dataset, num_replicas, rank, seed, shuffle=True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.skip = 0

    def set_epoch(self, epoch, skip=0):
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self):
        return self.num_samples - self.skip


def build_loader(dataset, args, train, collate_fn=None):
    if train:
        sampler = EpochSampler(dataset, get_world_size(), get_rank(), args.seed)
    elif is_dist() and getattr(args, "dist_eval", True):
        sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=get_world_size(), rank=get_rank(),
                                                      shuffle=False)
    else:
        sampler = torch.utils.data.SequentialSampler(dataset)
    workers = args.num_workers
    return torch.utils.data.DataLoader(
        dataset, sampler=sampler, batch_size=args.batch_size, num_workers=workers, drop_last=train,
        pin_memory=args.pin_mem and str(args.device).startswith("cuda"), persistent_workers=workers > 0 and train,
        collate_fn=collate_fn, worker_init_fn=_worker_init if workers > 0 else None)


def _worker_init(worker_id):
    # torch's worker loop has already seeded torch and random with its worker seed (base seed +
    # worker id), numpy from a hash of the two, and set one torch thread; numpy and random are
    # re-seeded here with the worker seed mod 2^32, as the release's seed_worker does.
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)
    ignore_stop_signals()


def resumable_epochs(loader, start_epoch, start_iteration, epochs):
    """``(epoch, first iteration)`` of each epoch left to train, the loader's sampler set for it:
    in the first one, past the iterations a stopped run had already done."""
    for epoch in range(start_epoch, epochs):
        skip = start_iteration if epoch == start_epoch else 0
        loader.sampler.set_epoch(epoch, skip=skip * loader.batch_size)
        yield epoch, skip
