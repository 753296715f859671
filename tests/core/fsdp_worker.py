"""One rank of tests/core/test_fsdp.py: ``torchrun --nproc_per_node 2 fsdp_worker.py OUT``.

A tiny causal LM (embedding, two linear layers, tied to nothing) sharded with FSDP2
(``torch.distributed.fsdp.fully_shard``) over a 2-process gloo mesh trains four steps; every
rank also holds an unsharded replica trained by the one-process route on the whole global
batch. Per step the rank's half of the batch goes through ``rift_loss`` with
``num_items_in_batch`` = the target tokens of the global batch, times the world size (FSDP
averages gradients over ranks, as the Hugging Face Trainer's ``average_tokens_across_devices``
does). Step 3 gives rank 1 no target token at all, step 4 only negative rewards. Rank 0 writes
per-step reference and sharded losses, loss parts, and the largest gradient difference
(gathered ``full_tensor()`` of every sharded gradient against the replica's) to ``OUT``.
"""

import copy
import json
import math
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

import rift_losses

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/harness.py
from harness import leave_without_teardown  # noqa: E402

V, H, B, T = 48, 16, 4, 9  # B rows per global batch: rows 0-1 on rank 0, rows 2-3 on rank 1


class TinyLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(V, H)
        self.mid = torch.nn.Linear(H, H)
        self.head = torch.nn.Linear(H, V)

    def forward(self, ids):
        return self.head(torch.tanh(self.mid(self.embed(ids))))


def batches(method):
    """Four global batches (ids, labels aligned with the logits, raw rewards, groups)."""
    g = torch.Generator().manual_seed(7)
    out = []
    for step in range(4):
        ids = torch.randint(0, V, (B, T), generator=g)
        labels = torch.randint(0, V, (B, T), generator=g)
        labels[:, :3] = -100  # the prompt
        labels[1, 6:] = -100  # rows of different lengths
        rewards = torch.tensor([1.0, -0.2, 0.5, -1.0])
        if step == 2:
            labels[2:] = -100  # rank 1 sees no target token
        if step == 3:
            rewards = torch.tensor([1.0, 0.3, -0.2, -0.5])  # rank 1 sees only negative rewards
        groups = torch.tensor([0, 1, 0, 1])
        if method != "none":  # normalized over whole groups of the global batch (as the adapters do, at load)
            rewards = rift_losses.normalize_rewards(rewards, groups, method=method)
        out.append((ids, labels, rewards))
    return out


def step_loss(model, ids, labels, rewards, n_items, scale):
    loss, stats = rift_losses.rift_loss(model(ids), labels, rewards, num_items_in_batch=n_items, return_stats=True)
    return loss * scale, stats


def main():
    out, method = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    replica = TinyLM()
    sharded = copy.deepcopy(replica)
    for layer in (sharded.embed, sharded.mid, sharded.head):
        fully_shard(layer)
    fully_shard(sharded)
    opt_ref = torch.optim.SGD(replica.parameters(), lr=0.5)
    opt = torch.optim.SGD(sharded.parameters(), lr=0.5)
    rows = slice(rank * B // world, (rank + 1) * B // world)
    log = []
    for ids, labels, rewards in batches(method):
        n_items = int((labels != -100).sum())
        ref, ref_stats = step_loss(replica, ids, labels, rewards, n_items, 1.0)
        ref.backward()
        loss, stats = step_loss(sharded, ids[rows], labels[rows], rewards[rows], n_items, float(world))
        loss.backward()
        parts = torch.stack([loss.detach() / world, stats.pos_loss, stats.neg_loss])  # parts: over N, not scaled
        dist.all_reduce(parts)  # the logged loss: the mean over ranks, as the Trainer logs it
        local = torch.zeros(world, 2)
        local[rank] = torch.stack([loss.detach(), stats.pos_loss])
        dist.all_reduce(local)  # each rank's own loss and positive part
        grad_diff = max(
            (p.grad.full_tensor() - r.grad).abs().max().item()
            for p, r in zip(sharded.parameters(), replica.parameters())
        )
        grad_norm = math.sqrt(sum(float(p.grad.full_tensor().pow(2).sum()) for p in sharded.parameters()))
        ref_norm = math.sqrt(sum(float(r.grad.pow(2).sum()) for r in replica.parameters()))
        log.append(
            {
                "ref": [ref.item(), ref_stats.pos_loss.item(), ref_stats.neg_loss.item()],
                "fsdp": parts.tolist(),
                "local": local.tolist(),
                "grad_diff": grad_diff,
                "grad_norm": grad_norm,
                "ref_norm": ref_norm,
            }
        )
        opt.step(), opt_ref.step(), opt.zero_grad(), opt_ref.zero_grad()
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"world": world, "steps": log}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
    leave_without_teardown()  # tests/harness.py: skips the teardown where the exit abort happens
