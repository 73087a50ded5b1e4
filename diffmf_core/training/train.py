"""The training loop behind ``diffmf train`` (its options and checks: diffmf_core.tools.train):
train DIFF-MF with the loss of Eq. 11-14, or with the validation score itself (``--loss score``,
see below); single process, or torchrun + DDP.

    diffmf train --data DATA/RoadScene DATA/M3SVD --holdout '1230_1202_*' --val-every 250 --out runs/train/live
    torchrun --nproc_per_node 2 -m diffmf_core.cli train ...      # DistributedDataParallel

Everything goes to ``--out``: ``checkpoint.safetensors`` (model + Adam state + step + RNG, written
atomically every ``--ckpt-every`` steps; a restarted run with the same ``--out`` continues from it),
``weights.safetensors`` (the final network, loadable by ``Fuser``), and ``log.csv`` (losses per
logged step). No pickle anywhere: checkpoints are safetensors with JSON metadata.

Validation (``--holdout`` patterns take whole clips out of training, ``--val-every K``): on the
held-out pairs at full size, each of the paper's six metrics (EN, SD, SF, MI, VIF, AG) of the
network is divided by the better of two classical rules on that metric (the Laplacian pyramid with
a max base, ``baselines.fuse_laplacian(base="max")``, and guided filtering, ``fuse_gff``), capped at
``VAL_CAP``; the score is the mean of the six. 1.0 means at least as good as the better classical
rule on every metric; the cap keeps an ever sharper output (SF, AG) from buying a loss of
faithfulness (MI, VIF). A run that starts at step 0 is also scored before its first step, so the
initial network (``--init``, or the untrained decoder's classical fusion) is a candidate too.
Scores go to ``val.csv`` (its first row: the reference values); the best network so far to ``best.safetensors``, and with validation on,
``weights.safetensors`` is that best network.

``--loss score`` trains for that score directly (``losses.ScoreLoss``): the same six metrics, written
to be differentiable, against the same two classical rules fused from each training crop; log.csv
then holds the six ratios instead of the paper loss's three terms. It knows nothing of video:
whatever sharpening or contrast it buys also shows as frame-to-frame flicker (docs/training.md).
"""
from __future__ import annotations

import argparse
import csv
import fnmatch
import hashlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from diffmf_core.baselines import fuse_gff, fuse_laplacian
from diffmf_core.common.color import bgr_to_ycrcb, unit_to_u8
from diffmf_core.common.outputs import file_mode
from diffmf_core.config import get_preset
from diffmf_core.models import DiffMF
from diffmf_core.training.data import DataError, PairDataset, find_pairs, load_pair
from diffmf_core.modules.pyramid_decoder import rule_fusion
from diffmf_core.training.losses import FusionLoss, RuleLoss, ScoreLoss, TargetLoss
from diffmf_core.training.metrics import evaluate_pair, target_retention, warm_targets
from diffmf_core.weights import WeightsError, load_model, save_weights

VAL_METRICS = ScoreLoss.PARTS  # EN, SD, SF, MI, VIF, AG: --loss score mirrors the score metric by metric
VAL_CAP = 1.1  # a metric counts up to 10 % above the better classical rule
VAL_COLUMNS = (*VAL_METRICS, "TR")  # TR: mean warm-target retention (metrics.target_retention)
VAL_HEADER = ["step", "score", *VAL_COLUMNS]
VAL_MARGIN = 0.002  # a network is kept only if it beats its rule and its constant-head copy by this much


def split_pairs(roots: list[Path], holdout: list[str]) -> tuple[list, list]:
    """(training pairs, held-out pairs) of every root; a pair is held out when its name matches a
    ``holdout`` glob. Raises DataError when a pattern matches nothing or nothing is left to train."""
    pairs = [pair for root in roots for pair in find_pairs(root)]
    for pat in holdout:
        if not any(fnmatch.fnmatchcase(name, pat) for name, _, _ in pairs):
            raise DataError(f"--holdout {pat!r} matches no pair name")
    is_held = [any(fnmatch.fnmatchcase(name, pat) for pat in holdout) for name, _, _ in pairs]
    held = [pair for pair, h in zip(pairs, is_held) if h]
    train = [pair for pair, h in zip(pairs, is_held) if not h]
    if not train:
        raise DataError("no training pairs left after --holdout")
    return train, held


class Validator:
    """Scores a network on held-out pairs at full size (see the module docstring)."""

    def __init__(self, pairs: list, limit: int):
        step = max(1, len(pairs) / limit)
        chosen = [pairs[int(i * step)] for i in range(min(limit, len(pairs)))]
        self.images = []
        for _, ir_path, vi_path in chosen:
            ir, vi = load_pair(ir_path, vi_path)
            vi_y = bgr_to_ycrcb(vi)[0]
            self.images.append((ir.astype(np.float32) / 255.0, vi_y, ir, unit_to_u8(vi_y)))
        self.targets = [warm_targets(ir8) for _, _, ir8, _ in self.images]  # fixed: found once
        lp = self._means([fuse_laplacian(ir, vi) for ir, vi, _, _ in self.images])
        lp_max = self._means([fuse_laplacian(ir, vi, base="max") for ir, vi, _, _ in self.images])
        gff = self._means([fuse_gff(ir, vi) for ir, vi, _, _ in self.images])
        self.reference = {k: max(lp_max[k], gff[k]) for k in VAL_METRICS}
        self.reference["TR"] = max(lp["TR"], lp_max["TR"])

    def _means(self, fused: list) -> dict[str, float]:
        rows = [evaluate_pair(unit_to_u8(f), ir8, vi8, VAL_METRICS) for f, (_, _, ir8, vi8) in zip(fused, self.images)]
        means = {k: float(np.mean([r[k] for r in rows])) for k in VAL_METRICS}
        kept = [r for f, (_, _, ir8, _), targets in zip(fused, self.images, self.targets)
                for r in target_retention(ir8, unit_to_u8(f), targets)]
        means["TR"] = float(np.mean(kept)) if kept else 1.0
        return means

    def score(self, means: dict[str, float]) -> float:
        """Half the mean capped ratio of the six metrics, half the capped retention ratio."""
        paper = np.mean([min(means[k] / self.reference[k], VAL_CAP) for k in VAL_METRICS])
        return float(0.5 * paper + 0.5 * min(means["TR"] / max(self.reference["TR"], 1e-6), VAL_CAP))

    @torch.no_grad()
    def fused(self, fuse, device: torch.device) -> list[np.ndarray]:
        """``fuse(ir, vi)`` ((1, 1, H, W) tensors -> same) on every held-out pair, as float images."""
        return [fuse(torch.from_numpy(ir)[None, None].to(device), torch.from_numpy(vi)[None, None].to(device))
                [0, 0].float().cpu().numpy() for ir, vi, _, _ in self.images]

    def __call__(self, model: torch.nn.Module, device: torch.device) -> tuple[float, dict[str, float]]:
        was_training = model.training
        model.eval()
        means = self._means(self.fused(model, device))
        model.train(was_training)
        return self.score(means), means

    def rule(self, model: torch.nn.Module, device: torch.device) -> tuple[float, dict[str, float]]:
        """The score of the network's decoder rule alone (``rule_fusion``, no trunk, no head)."""
        levels, stretch = model.cfg.pyramid_levels, model.cfg.output_stretch
        means = self._means(self.fused(lambda ir, vi: rule_fusion(ir, vi, levels, stretch), device))
        return self.score(means), means

    @torch.no_grad()
    def constant_head(self, model: torch.nn.Module, device: torch.device) -> tuple[float, dict[str, float]]:
        """The score of a copy whose head outputs, everywhere and on every image, the mean of the
        network's head maps over the held-out pairs: what a retune of the rule's constants gives."""
        was_training = model.training
        model.eval()
        captured = []
        hook = model.decoder.head.register_forward_hook(lambda m, i, o: captured.append(o.mean(dim=(0, 2, 3))))
        self.fused(model, device)
        hook.remove()
        head = model.decoder.head
        weight, bias = head.weight.detach().clone(), head.bias.detach().clone()
        head.weight.zero_()
        head.bias.copy_(torch.stack(captured).mean(dim=0))
        try:
            means = self._means(self.fused(model, device))
        finally:
            head.weight.copy_(weight)
            head.bias.copy_(bias)
            model.train(was_training)
        return self.score(means), means


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


def save_checkpoint(path: Path, model, opt, step: int, meta: dict, seconds: float = 0.0) -> None:
    """Model + optimizer + RNG at ``step`` (and the training ``seconds`` so far) as one safetensors
    file (atomic replace)."""
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update(_optimizer_tensors(opt, model))
    tensors["rng/torch"] = torch.get_rng_state()
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"step": str(step), "seconds": f"{seconds:.0f}",
                                                "meta": json.dumps(meta)})
    os.chmod(tmp, file_mode())  # safetensors writes 0600; the file gets the user's umask
    os.replace(tmp, path)


def load_checkpoint(path: Path, model, opt) -> tuple[int, float]:
    """Restore a checkpoint written by ``save_checkpoint``; returns its step and training seconds."""
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        step, seconds = int(f.metadata()["step"]), float(f.metadata().get("seconds", 0))
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    _restore_optimizer(opt, model, {k: v for k, v in tensors.items() if k.startswith("opt/")})
    torch.set_rng_state(tensors["rng/torch"])
    return step, seconds


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


def run(args: argparse.Namespace) -> int:
    """The training loop for ``diffmf train``'s options (``args``: diffmf_core.tools.train's parser,
    checked there). Ends with ``SystemExit`` and a one-line message on data, --init or checkpoint
    errors; returns 0 when the run has written its weights."""
    from tqdm import tqdm

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        train_pairs, held_pairs = split_pairs(args.data, args.holdout)
    except DataError as exc:
        raise SystemExit(f"diffmf train: {exc}") from None
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
    try:
        cfg = get_preset(args.preset, output_stretch=args.stretch, head_region=args.head_region,
                         warm_margin=args.warm_margin, head_maps=args.head_maps)
    except ValueError as exc:
        raise SystemExit(f"diffmf train: {exc}") from None
    model = DiffMF(cfg)
    if args.init is not None:
        try:
            skip = ("decoder.head.",) if args.reset_head else ()
            model.load_state_dict(load_model(args.init, expect_preset=args.preset, skip=skip).state_dict())
        except WeightsError as exc:
            raise SystemExit(f"diffmf train: --init: {exc}") from None
    model = model.to(device)
    dataset = PairDataset(train_pairs, crop=args.crop, train=True)
    validator = Validator(held_pairs, args.val_max) if args.val_every and rank == 0 else None
    steps_per_epoch = max(1, len(dataset) // (args.batch_size * world))
    total = args.iters or args.epochs * steps_per_epoch
    out = args.out or Path("runs/train") / args.preset
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.safetensors"

    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    start, seconds_before = 0, 0.0
    if ckpt.exists() and not args.fresh:
        try:
            start, seconds_before = load_checkpoint(ckpt, model, opt)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise SystemExit(f"diffmf train: {ckpt} does not resume a {args.preset!r} run ({exc.__class__.__name__}); "
                             "use another --out or --fresh") from None
        if rank == 0:
            print(f"resuming from {ckpt} at step {start}/{total}")
    torch.manual_seed(args.seed * 1000 + rank + start)  # data order differs per rank and resume point
    net = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
    targets = TargetLoss(radius=args.target_radius, share=args.target_share, norm=args.target_norm)
    target_loss = targets if args.lambda_target > 0 else None
    loss_fn = (ScoreLoss(VAL_CAP) if args.loss == "score" else
               RuleLoss(cfg.pyramid_levels, targets, args.detail_overshoot, cfg.output_stretch)
               if args.loss == "rule" else
               FusionLoss(args.lambda_ssim, args.lambda_text, args.lambda_int, aggregation=args.aggregation,
                          text_overshoot=args.text_overshoot))
    parts_header = [*loss_fn.PARTS, *(TargetLoss.PARTS if target_loss else ())]

    sampler = (DistributedSampler(dataset, num_replicas=world, rank=rank, seed=args.seed + start)
               if distributed else RandomSampler(dataset, replacement=True, num_samples=10 ** 8))
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                        drop_last=True, persistent_workers=args.workers > 0)
    log_path = out / "log.csv"
    new_log = not log_path.exists() or start == 0
    log = open(log_path, "w" if new_log else "a", newline="")
    writer = csv.writer(log)
    if new_log:
        writer.writerow(["step", "lr", "loss", *parts_header, "seconds"])
    # paths relative to the working directory: a weights file must not carry a machine's layout
    meta = {k: _portable(v) for k, v in vars(args).items() if not k.startswith("_") and k != "command"}
    val_path, best_path = out / "val.csv", out / "best.safetensors"
    if start == 0:  # a new run: its validation starts afresh
        val_path.unlink(missing_ok=True)
        best_path.unlink(missing_ok=True)
    best = _saved_score(best_path)

    step, epoch, t0 = start, 0, time.time()

    def validate(step: int, best: float | None) -> float:
        """Score the network at ``step`` and a constant-head copy of it into val.csv; keep it as
        best.safetensors if it is the best so far and beats both its rule and that copy."""
        score, means = validator(model, device)
        if not val_path.exists():  # the reference values the score divides by, and the rule's score
            _append_row(val_path, VAL_HEADER, ["reference", "1.00000",
                                               *(f"{validator.reference[k]:.4f}" for k in VAL_COLUMNS)])
            rule_score, rule_means = validator.rule(model, device)
            _append_row(val_path, VAL_HEADER, ["rule", f"{rule_score:.5f}", *(f"{rule_means[k]:.4f}" for k in VAL_COLUMNS)])
        rule_score = _row_score(val_path, "rule")
        constant_score, constant_means = validator.constant_head(model, device)
        _append_row(val_path, VAL_HEADER, [step, f"{score:.5f}", *(f"{means[k]:.4f}" for k in VAL_COLUMNS)])
        _append_row(val_path, VAL_HEADER, [f"constant_head_{step}", f"{constant_score:.5f}",
                                           *(f"{constant_means[k]:.4f}" for k in VAL_COLUMNS)])
        decides = score >= max(rule_score, constant_score) + VAL_MARGIN
        if decides and (best is None or score > best):
            best = score
            save_weights(model, best_path, steps=step, seed=args.seed, val_score=f"{score:.5f}",
                         val_rule_score=f"{rule_score:.5f}", val_constant_head_score=f"{constant_score:.5f}",
                         train_seconds=f"{seconds_before + time.time() - t0:.0f}", command=_command(meta))
        tqdm.write(f"step {step}: validation score {score:.4f} (rule {rule_score:.4f}, constant head "
                   f"{constant_score:.4f}; best {'none yet' if best is None else f'{best:.4f}'})")
        return best

    if validator is not None and start == 0:
        best = validate(0, best)
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
            fused = net(ir, vi)
            loss, parts = loss_fn(fused, ir, vi)
            if target_loss is not None:
                parts = {**parts, "target": target_loss(fused, ir)}
                loss = loss + args.lambda_target * parts["target"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{running:.3f}")
            if rank == 0 and (step % args.log_every == 0 or step == total):
                writer.writerow([step, f"{opt.param_groups[0]['lr']:.3e}", f"{loss.item():.5f}",
                                 *(f"{parts[k].item():.5f}" for k in parts_header),
                                 f"{time.time() - t0:.1f}"])
                log.flush()
            if validator is not None and (step % args.val_every == 0 or step == total):
                best = validate(step, best)
            if rank == 0 and (step % args.ckpt_every == 0 or step == total):
                save_checkpoint(ckpt, model, opt, step, meta, seconds_before + time.time() - t0)
        epoch += 1
    bar.close()
    log.close()
    print(f"rank {rank} finished at step {step}: parameter digest {parameter_digest(model)}", flush=True)
    if rank == 0:
        if validator is not None and best_path.exists():
            final = out / "weights.safetensors"
            final.write_bytes(best_path.read_bytes())
            print(f"wrote {final}: the best validated network (score {best:.4f}) of {step} steps")
        else:
            if validator is not None:
                print("no validated network beat both its rule and its constant-head copy: "
                      "weights.safetensors is the last network (see val.csv)")
            final = save_weights(model, out / "weights.safetensors", steps=step, seed=args.seed,
                                 train_seconds=f"{seconds_before + time.time() - t0:.0f}", command=_command(meta))
            print(f"wrote {final} after {step} steps ({time.time() - t0:.0f} s)")
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return 0


def _portable(value):
    """Argument values for the metadata: paths relative to the working directory (no machine layout)."""
    if isinstance(value, Path):
        return os.path.relpath(value)
    if isinstance(value, list):
        return [_portable(v) for v in value]
    return str(value)


def _command(meta: dict) -> str:
    """The run as one command line (repeatable options repeated, lists space-separated)."""
    words = ["diffmf", "train"]
    for key, value in meta.items():
        flag = f"--{key.replace('_', '-')}"
        if key == "holdout":
            words += [w for pattern in value for w in (flag, repr(pattern))]
        elif isinstance(value, list):
            words += [flag, *value]
        elif value in ("True", "False"):  # store_true switches
            words += [flag] if value == "True" else []
        elif value != "None":
            words += [flag, value]
    return " ".join(words)


def _append_row(path: Path, header: list, row: list) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(header)
        writer.writerow(row)


def _row_score(path: Path, step: str) -> float:
    """The score of val.csv's row named ``step`` (e.g. "rule")."""
    with open(path, newline="") as fh:
        return next(float(row["score"]) for row in csv.DictReader(fh) if row["step"] == step)


def _saved_score(path: Path) -> float | None:
    """The validation score recorded in a best.safetensors (None when there is none)."""
    if not path.exists():
        return None
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        return float(f.metadata()["val_score"])
