"""Run by test_loss.py: one rank's share of a contrastive step under DistributedDataParallel (or the whole batch alone).

    python ddp_loss_worker.py OUT.safetensors            one process, whole batch
    torchrun --nproc-per-node 2 ddp_loss_worker.py OUT   two gloo ranks, half the batch each
"""

import gc
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from vidsearch.distributed import setup_distributed, shutdown_distributed
from vidsearch.train.loss import contrastive_loss

BATCH = 8


class Towers(nn.Module):
    def __init__(self):
        super().__init__()
        self.text = nn.Linear(6, 4)
        self.video = nn.Linear(5, 4)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, text, video):
        return F.normalize(self.text(text), dim=-1), F.normalize(self.video(video), dim=-1)


def main(out: str) -> None:
    rank, world, _ = setup_distributed(cuda=False)
    torch.manual_seed(0)
    towers = Towers().double()
    inputs = torch.randn(BATCH, 6, dtype=torch.float64), torch.randn(BATCH, 5, dtype=torch.float64)
    share = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    model = nn.parallel.DistributedDataParallel(towers) if world > 1 else towers
    text, video = model(inputs[0][share], inputs[1][share])
    loss = contrastive_loss(text.double(), video.double(), towers.logit_scale)
    loss.backward()
    if rank == 0:
        result = {f"grad.{name}": p.grad.detach().clone() for name, p in towers.named_parameters()}
        save_file({"loss": loss.detach().reshape(1), **result}, out)
    # The DDP wrapper (its reducer holds the process group) goes before the group does, as it does in training
    # (`train` returns first): destroying the group under a live wrapper sometimes aborted a rank in gloo's teardown.
    del model, text, video, loss
    gc.collect()
    # Every rank waits for rank 0's file before tearing down: a rank leaving while another still works aborted.
    shutdown_distributed()


if __name__ == "__main__":
    main(sys.argv[1])
