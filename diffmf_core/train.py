"""``diffmf train``: train DIFF-MF with the loss of Eq. 11-14 (single process, or torchrun + DDP).

    diffmf train --data ../shared/data/train/RoadScene --preset live --iters 4000 --out runs/train/live
    torchrun --nproc_per_node 2 -m diffmf_core.cli train ...      # DistributedDataParallel

Everything goes to ``--out``: ``checkpoint.safetensors`` (model + Adam state + step + RNG, written
atomically every ``--ckpt-every`` steps; a restarted run with the same ``--out`` continues from it),
``weights.safetensors`` (the final network, loadable by ``Fuser``), and ``log.csv`` (losses per
logged step). No pickle anywhere: checkpoints are safetensors with JSON metadata.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from diffmf_core.config import PRESETS, get_preset
from diffmf_core.data import PairDataset
from diffmf_core.losses import FusionLoss
from diffmf_core.models import DiffMF
from diffmf_core.paths import shared_data_dir
from diffmf_core.weights import load_model, save_weights


def configure_parser(p: argparse.ArgumentParser) -> None:
    default_data = shared_data_dir() / "train" / "RoadScene" if shared_data_dir() else None
    p.add_argument("--data", type=Path, default=default_data, help="root with ir/ and vi/ (default: shared RoadScene)")
    p.add_argument("--preset", default="live", choices=sorted(PRESETS))
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/train/<preset>)")
    p.add_argument("--iters", type=int, default=None, help="optimizer steps (overrides --epochs)")
    p.add_argument("--epochs", type=int, default=46, help="epochs over the data set (paper: 46)")
    p.add_argument("--batch-size", type=int, default=4, help="per process (paper: 4)")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-5, help="Adam learning rate (paper: 2e-5)")
    p.add_argument("--lr-min", type=float, default=None, help="cosine-decay the lr to this value (default: constant)")
    p.add_argument("--lambda-ssim", type=float, default=10.0)
    p.add_argument("--lambda-text", type=float, default=20.0)
    p.add_argument("--lambda-int", type=float, default=20.0)
    p.add_argument("--aggregation", default="max", choices=("max", "mean"), help="M of Eq. 13")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt-every", type=int, default=100, help="checkpoint every K steps")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="auto")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in --out")
    p.add_argument("--init", type=Path, default=None,
                   help="start from this weights file (fine-tuning; its preset must match --preset)")


def _optimizer_tensors(opt: torch.optim.Adam, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for group in opt.param_groups:
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                out[f"opt/{names[id(p)]}/{key}"] = torch.as_tensor(value).detach().cpu().clone()
    return out


def _restore_optimizer(opt: torch.optim.Adam, model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for key, value in tensors.items():
        _, name, field = key.split("/", 2)
        state = opt.state[params[name]]
        state[field] = value.to(params[name].device) if field != "step" else value.clone()


def save_checkpoint(path: Path, model, opt, step: int, meta: dict) -> None:
    """Model + optimizer + RNG at ``step`` as one safetensors file (atomic replace)."""
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update(_optimizer_tensors(opt, model))
    tensors["rng/torch"] = torch.get_rng_state()
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"step": str(step), "meta": json.dumps(meta)})
    os.replace(tmp, path)


def load_checkpoint(path: Path, model, opt) -> int:
    """Restore a checkpoint written by ``save_checkpoint``; returns its step."""
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        step = int(f.metadata()["step"])
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    _restore_optimizer(opt, model, {k: v for k, v in tensors.items() if k.startswith("opt/")})
    torch.set_rng_state(tensors["rng/torch"])
    return step


def parameter_digest(model: torch.nn.Module) -> str:
    """SHA-256 of all parameters (DDP ranks must agree after training)."""
    h = hashlib.sha256()
    for _, p in sorted(model.state_dict().items()):
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _lr_at(step: int, total: int, lr: float, lr_min: float | None) -> float:
    if lr_min is None:
        return lr
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * min(step, total) / total))


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.data is None:
        raise SystemExit("diffmf train: --data is required (no shared data folder found)")
    if distributed:
        backend = "nccl" if torch.cuda.is_available() and args.device != "cpu" else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    if args.device == "auto":
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)

    torch.manual_seed(args.seed)  # identical initial weights on every rank
    cfg = get_preset(args.preset)
    model = DiffMF(cfg)
    if args.init is not None:
        model.load_state_dict(load_model(args.init, expect_preset=args.preset).state_dict())
    model = model.to(device)
    dataset = PairDataset(args.data, crop=args.crop, train=True)
    steps_per_epoch = max(1, len(dataset) // (args.batch_size * world))
    total = args.iters or args.epochs * steps_per_epoch
    out = args.out or Path("runs/train") / args.preset
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.safetensors"

    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    start = 0
    if ckpt.exists() and not args.fresh:
        start = load_checkpoint(ckpt, model, opt)
        if rank == 0:
            print(f"resuming from {ckpt} at step {start}/{total}")
    torch.manual_seed(args.seed * 1000 + rank + start)  # data order differs per rank and resume point
    net = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
    loss_fn = FusionLoss(args.lambda_ssim, args.lambda_text, args.lambda_int, aggregation=args.aggregation)

    sampler = (DistributedSampler(dataset, num_replicas=world, rank=rank, seed=args.seed + start)
               if distributed else RandomSampler(dataset, replacement=True, num_samples=10 ** 8))
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                        drop_last=True, persistent_workers=args.workers > 0)
    log_path = out / "log.csv"
    new_log = not log_path.exists() or start == 0
    log = open(log_path, "w" if new_log else "a", newline="")
    writer = csv.writer(log)
    if new_log:
        writer.writerow(["step", "lr", "loss", "ssim", "text", "int", "seconds"])
    # paths relative to the working directory: a weights file must not carry a machine's layout
    meta = {k: os.path.relpath(v) if isinstance(v, Path) else str(v) for k, v in vars(args).items()
            if not k.startswith("_") and k != "command"}

    step, epoch, t0 = start, 0, time.time()
    bar = tqdm(total=total, initial=start, disable=rank != 0, desc=f"train {args.preset}", unit="step")
    running = None
    net.train()
    while step < total:
        if distributed:
            sampler.set_epoch(epoch)
        for batch in loader:
            if step >= total:
                break
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, total, args.lr, args.lr_min)
            ir, vi = batch["ir"].to(device), batch["vi"].to(device)
            loss, parts = loss_fn(net(ir, vi), ir, vi)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{running:.3f}")
            if rank == 0 and (step % args.log_every == 0 or step == total):
                writer.writerow([step, f"{opt.param_groups[0]['lr']:.3e}", f"{loss.item():.5f}",
                                 *(f"{parts[k].item():.5f}" for k in ("ssim", "text", "int")),
                                 f"{time.time() - t0:.1f}"])
                log.flush()
            if rank == 0 and (step % args.ckpt_every == 0 or step == total):
                save_checkpoint(ckpt, model, opt, step, meta)
        epoch += 1
    bar.close()
    log.close()
    print(f"rank {rank} finished at step {step}: parameter digest {parameter_digest(model)}", flush=True)
    if rank == 0:
        final = save_weights(model, out / "weights.safetensors", steps=step, seed=args.seed,
                             command="diffmf train " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in meta.items()))
        print(f"wrote {final} after {step} steps ({time.time() - t0:.0f} s)")
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return 0
