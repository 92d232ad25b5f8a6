"""Data-parallel training over torch.distributed, started by torchrun or by SLURM's srun.

    torchrun --nproc_per_node=N [--nnodes=M ...] -m genexp train ...
    srun --ntasks-per-node=N python -m genexp train ...      (in an sbatch script)

torchrun exports RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; under srun the same
facts come from SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID and the job's first node. Every rank
builds the same model from one seed (rank 0's weights are broadcast all the same), takes its slice
of every global batch, and averages gradients before each optimizer step (an explicit all-reduce,
as StyleGAN2-ADA does, rather than the DistributedDataParallel wrapper: GAN steps run several
forwards per backward and R1 / path-length penalties backpropagate through gradients, which the
wrapper does not support). Rank 0 alone logs, writes checkpoints and talks to W&B.

Every helper here is a no-op in a single process, so models and methods call them unconditionally.
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist

from genexp.errors import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env(env: dict | None = None) -> World:
    """This process's place among the ranks: torchrun's variables, else srun's, else a single process."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env and "RANK" in env:
        return World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in env and "SLURM_STEP_ID" in env:
        # srun inside an allocation (an sbatch script without srun has no step and stays single)
        return World(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    return World()


def first_host(nodelist: str) -> str:
    """The first host of a SLURM nodelist: 'gpu[03-05,07],cpu1' -> 'gpu03'."""
    match = re.match(r"([^,\[]+)(?:\[([^\],\-]+))?", nodelist.strip())
    if not match:
        raise UserError(f"cannot read the first node of SLURM_JOB_NODELIST={nodelist!r}: set MASTER_ADDR")
    return match.group(1) + (match.group(2) or "")


def rendezvous_env(world: World) -> None:
    """Under srun, torch's env:// rendezvous still needs MASTER_ADDR / MASTER_PORT: the job's first
    node, and a port derived from the job id (so two jobs on one node do not collide)."""
    os.environ.setdefault("MASTER_ADDR", first_host(os.environ.get("SLURM_JOB_NODELIST", "127.0.0.1")))
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", "0") or 0) % 20000))
    os.environ.setdefault("RANK", str(world.rank))
    os.environ.setdefault("WORLD_SIZE", str(world.size))
    os.environ.setdefault("LOCAL_RANK", str(world.local_rank))


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group (gloo on CPU, nccl on CUDA); each rank takes the GPU of its local rank."""
    world = from_env()
    if not world.enabled:
        return world, device
    if dist.is_initialized():
        return world, device
    rendezvous_env(world)
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise UserError(f"local rank {world.local_rank} but {torch.cuda.device_count()} GPUs on this node: "
                            "start as many processes per node as there are GPUs")
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise UserError(f"trainer.device={device.type}: data-parallel runs use cuda (nccl) or cpu (gloo)")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=world.rank, world_size=world.size,
                            timeout=datetime.timedelta(minutes=30))
    return world, device


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> World:
    return World(dist.get_rank(), dist.get_world_size()) if active() else World()


def comm_device() -> torch.device:
    """Where small tensors for a collective must live: nccl talks GPU memory only."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def rank_seed(seed: int, rank: int) -> int:
    """Each rank's seed for its own noise (latents, dropout, augmentation): rank 0 keeps the run's
    seed, so a one-process run is the same run as before; the others are spread far from it."""
    return seed if rank == 0 else (seed * 1_000_003 + 7_919 * rank) % 2 ** 63


def all_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place."""
    if active():
        dist.all_reduce(tensor)
    return tensor


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s values everywhere, in place."""
    if active():
        dist.broadcast(tensor, src)
    return tensor


def mean_values(values: dict[str, float]) -> dict[str, float]:
    """Logged scalars averaged over ranks (in a fixed key order), so that every rank takes the same
    decision on them (a non-finite loss stops all ranks or none)."""
    if not active() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=comm_device())
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def any_rank(flag: bool) -> bool:
    """True on every rank when it is true on one (a stop signal noted by any of them)."""
    if not active():
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def average_gradients(optimizer: torch.optim.Optimizer) -> None:
    """Mean of every rank's gradients, in one flat all-reduce. Parameters without a gradient are
    left out on every rank alike: all ranks run the same code path, so the same ones are None."""
    if not active():
        return
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_module(module: torch.nn.Module, buffers_only: bool = False) -> None:
    """Rank 0's parameters and buffers (or buffers only: running statistics, w_avg) on every rank."""
    if not active():
        return
    tensors = list(module.buffers()) if buffers_only else [*module.parameters(), *module.buffers()]
    for t in tensors:
        if t.is_floating_point() or t.dtype in (torch.int64, torch.int32, torch.bool, torch.uint8):
            if t.dtype == torch.bool:  # gloo has no bool broadcast
                tmp = t.to(torch.uint8)
                dist.broadcast(tmp, 0)
                t.copy_(tmp.bool())
            else:
                dist.broadcast(t.data, 0)


def checksum(module: torch.nn.Module) -> str:
    """A digest of the parameters' bytes: equal on every rank while the ranks train in step."""
    import hashlib

    digest = hashlib.sha1()
    for p in module.parameters():
        digest.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def gather_objects(obj) -> list:
    """Every rank's ``obj`` (picklable), on every rank, in rank order."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, 0)
    return box[0]


def barrier() -> None:
    if active():
        dist.barrier()
