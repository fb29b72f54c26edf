"""One FSDP2 (``fully_shard``) training step of the embedded model on CPU over gloo; run by
tests/test_finetune_distributed.py under ``torch.distributed.run --nproc_per_node 2``. Rank 0 writes what it
saw to the JSON file named by argv[1]."""
import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from finetune.common import load_causal_lm, load_tokenizer, resolve_base
from finetune.data import build_sft_dataset
from fireharness.paths import ROOT


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    base = resolve_base("smollm2-135m")
    tokenizer = load_tokenizer(base)
    _, data = build_sft_dataset(str(ROOT / "data/fireact/data/finetune/alpaca_format/hotpotqa.json"), tokenizer,
                                128, 2 * world, False)
    model = load_causal_lm(base)
    full_rows = model.model.layers[0].mlp.up_proj.weight.shape[0]
    mesh = init_device_mesh("cpu", (world,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    weight = model.model.layers[0].mlp.up_proj.weight
    before = weight.full_tensor().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    row = data[rank]  # each rank its own example: data parallel with sharded weights
    ids = torch.tensor([row["input_ids"]])
    loss = model(input_ids=ids, labels=torch.tensor([row["labels"]])).loss
    loss.backward()
    optimizer.step()
    after = weight.full_tensor()
    losses = [torch.zeros(1) for _ in range(world)]
    dist.all_gather(losses, loss.detach().reshape(1))
    checksum = after.double().sum().reshape(1)
    sums = [torch.zeros(1, dtype=torch.float64) for _ in range(world)]
    dist.all_gather(sums, checksum)
    if rank == 0:
        json.dump({"world": world, "losses": [float(x) for x in losses], "full_rows": full_rows,
                   "local_rows": weight.to_local().shape[0], "changed": bool((after - before).abs().max() > 0),
                   "same_on_every_rank": len({float(s) for s in sums}) == 1}, open(out, "w"))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
