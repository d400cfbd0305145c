"""Train the i-ResNet density model: ``python -m invattn.train --preset NAME --out DIR [--resume] [--steps N]``,
or :func:`train` from Python (lesson 07).

* presets: ``smoke`` (seconds on a CPU), ``digits`` (scikit-learn's real 8×8 digits, CPU minutes),
  ``cifar10-paper`` (the paper's configuration; a GPU); the data set can be changed (``--dataset``,
  ``--data-root``), a missing one is reported with how to get it;
* a progress bar; metrics to ``DIR/metrics.jsonl``; ``DIR/curves.png``; samples ``DIR/samples_epochN.png``;
* checkpoints written atomically (temporary file, fsync, rename) every ``--checkpoint-every`` steps and at the
  end, holding model, optimiser, scheduler, every RNG state and the position in the data: ``--resume``
  continues exactly, so a run killed at any moment and resumed ends with the weights of an uninterrupted run;
* ``--amp`` (bfloat16 autocast, CUDA only; the certified bounds and the spectral-norm scale are computed in
  float64 outside autocast, but the convolutions then run on bfloat16-rounded weights, which the certificates do
  not cover: evaluate, invert and report bounds without it), ``--compile`` (``torch.compile``);
* multi-GPU (or multi-process CPU) with ``torchrun --nproc_per_node=K -m invattn.train ...``:
  DistributedDataParallel, each rank a disjoint shard of every batch; buffers (ActNorm state) are broadcast
  from rank 0 at each step, and the spectral normalisation is a function of the (identical) weights alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ._validation import check_choice, check_positive_float, check_positive_int
from .data import DATASETS, dequantize, digits, load_images
from .lesson import progress, resolve_device
from .models import PRESETS, FlowConfig, ResidualFlow

__all__ = ["TrainConfig", "TRAINING", "train", "load_checkpoint", "save_checkpoint", "main"]

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class TrainConfig:
    """How to train (the model is a :class:`FlowConfig`)."""

    dataset: str = "cifar10"
    data_root: str = "data"
    n_train: int | None = None  # None: the whole training set
    batch_size: int = 64
    epochs: int = 200
    steps: int | None = None  # stop after this many steps in total (overrides epochs)
    lr: float = 3e-3
    optimizer: str = "adamax"
    warmup_steps: int = 0
    grad_clip: float | None = None
    checkpoint_every: int = 500
    samples_per_epoch: int = 16
    seed: int = 1234


TRAINING: dict[str, TrainConfig] = {
    "smoke": TrainConfig(dataset="digits", n_train=256, batch_size=16, epochs=1, steps=20, checkpoint_every=10,
                         samples_per_epoch=4),
    "digits": TrainConfig(dataset="digits", batch_size=64, epochs=10, checkpoint_every=200, samples_per_epoch=16),
    # the paper: Adamax, lr 3e-3, batch 64, 200 epochs (its warm-up quirk ended at 2×lr; a clean 1-epoch ramp here)
    "cifar10-paper": TrainConfig(dataset="cifar10", batch_size=64, epochs=200, warmup_steps=782, checkpoint_every=1000),
}


# -- data ---------------------------------------------------------------------------------------
def training_images(config: TrainConfig, model: FlowConfig) -> torch.Tensor:
    """All training images, [N, C, H, W] in [0, 1], sized for the model."""
    if config.dataset == "digits":
        images = digits()[0]
        if model.in_channels != 1:
            images = images.expand(-1, model.in_channels, -1, -1)
        if model.image_size != 8:
            images = torch.nn.functional.interpolate(images, size=model.image_size, mode="bilinear", antialias=True)
        images = images[: config.n_train] if config.n_train else images
        # 16 grey levels → the 8-bit grid the dequantisation assumes
        return (images * 255).round() / 255
    images = load_images(config.dataset, config.data_root, "train", count=config.n_train, size=model.image_size)
    if images.shape[1] != model.in_channels:
        raise ValueError(f"{config.dataset} has {images.shape[1]} channels but the model takes {model.in_channels}")
    return images


def epoch_order(n: int, epoch: int, seed: int) -> torch.Tensor:
    """The permutation of the training set in ``epoch``: a function of (seed, epoch) only, so a resumed run
    sees exactly the batches the interrupted one would have."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


# -- checkpoints --------------------------------------------------------------------------------
def _rng_state() -> dict:
    state = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(), python=random.getstate())
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same folder, flushed to disk, then
    renamed over the old one, so an interruption leaves either the old or the new checkpoint, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint written by :func:`train` (plain tensors and built-in types: ``weights_only`` loading)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train first (python -m invattn.train --preset ... --out {path.parent})")
    return torch.load(path, map_location=map_location, weights_only=False)


# -- training -----------------------------------------------------------------------------------
class Objective(nn.Module):
    """Mean bits/dim of a batch of [0, 1] images (dequantised here): what DistributedDataParallel wraps."""

    def __init__(self, model: ResidualFlow) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.bits_per_dim(dequantize(images)).mean()


def _distributed() -> tuple[int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _check_in_step(model: nn.Module) -> None:
    """Raise if the ranks' weights or buffers differ (they must stay bit-identical)."""
    local = torch.stack([t.detach().double().sum() for t in [*model.parameters(), *model.buffers()]])
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    if any(not torch.equal(gathered[0], other) for other in gathered[1:]):
        raise RuntimeError("distributed ranks are out of step: their weights or buffers differ")


def _plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(steps, [h["bits_per_dim"] for h in history], lw=1, label="training batch")
    ax.set(xlabel="step", ylabel="bits/dim", title="training curve")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def _save_samples(model: ResidualFlow, n: int, path: Path, seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    model.eval()
    try:
        samples = model.sample(n, temperature=0.8, generator=torch.Generator().manual_seed(seed), tol=1e-4,
                               max_iter=200, on_failure="warn")
    finally:
        model.train()
    grid = make_grid((samples.float().cpu() + 0.5).clamp(0, 1), nrow=int(math.ceil(math.sqrt(n))), padding=1)
    plt.imsave(path, grid.permute(1, 2, 0).numpy(), metadata={"Software": None})


def train(
    preset: str = "smoke",
    out: str | Path = "runs/smoke",
    resume: bool = False,
    steps: int | None = None,
    device: str = "cpu",
    amp: bool = False,
    compile: bool = False,
    model_overrides: dict | None = None,
    training_overrides: dict | None = None,
    progress_bar: bool = True,
) -> dict:
    """Train ``preset`` into folder ``out``; return ``{"model", "history", "checkpoint"}``.

    ``model_overrides`` / ``training_overrides`` replace fields of the preset's :class:`FlowConfig` /
    :class:`TrainConfig` (e.g. ``{"attention": ("dot", None)}``, ``{"epochs": 3}``). With ``resume=True`` the
    run continues from ``out/checkpoint.pt`` exactly where it stopped (the configs are read from it).
    """
    check_choice(preset, "preset", tuple(PRESETS))
    out = Path(out)
    rank, world = _distributed()
    resolved = resolve_device(device)
    if resolved.type == "cuda" and world > 1:
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(resolved)
    if amp and resolved.type != "cuda":
        raise ValueError("amp=True (bfloat16 autocast) is for CUDA devices; on a CPU train in float32")
    checkpoint_path = out / CHECKPOINT
    state = None
    if resume:
        state = load_checkpoint(checkpoint_path)
        model_config = FlowConfig.from_dict(state["model_config"])
        train_config = TrainConfig(**state["train_config"])
    else:
        model_config = replace(PRESETS[preset], **(model_overrides or {}))
        train_config = replace(TRAINING[preset], **(training_overrides or {}))
    if steps is not None:
        train_config = replace(train_config, steps=check_positive_int(steps, "steps"))
    check_choice(train_config.dataset, "dataset", ("digits",) + DATASETS)
    check_positive_float(train_config.lr, "lr")
    check_choice(train_config.optimizer, "optimizer", ("adamax", "adam"))
    if train_config.batch_size % world:
        raise ValueError(f"batch_size {train_config.batch_size} must be divisible by the {world} processes")
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(train_config.seed)
    np.random.seed(train_config.seed)
    random.seed(train_config.seed)
    images = training_images(train_config, model_config)
    model = ResidualFlow(model_config).to(resolved)
    optimizer_class = torch.optim.Adamax if train_config.optimizer == "adamax" else torch.optim.Adam
    optimizer = optimizer_class(model.parameters(), lr=train_config.lr)
    warmup = max(train_config.warmup_steps, 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    batches_per_epoch = len(images) // train_config.batch_size
    if batches_per_epoch == 0:
        raise ValueError(f"{len(images)} training images are fewer than one batch of {train_config.batch_size}")
    total_steps = train_config.steps or train_config.epochs * batches_per_epoch
    step, history = 0, []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, history = state["step"], state["history"]
        _set_rng_state(state["rng"])
        if rank == 0:  # steps logged after the checkpoint are replayed: the log restarts from the checkpoint's
            with open(out / "metrics.jsonl", "w") as handle:
                handle.writelines(json.dumps(record) + "\n" for record in history)
    elif (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()  # a fresh run starts a fresh log
    if state is None:
        # ActNorm's data-dependent initialisation, on the first full batch, identical on every rank
        first = images[epoch_order(len(images), 0, train_config.seed)[: train_config.batch_size]].to(resolved)
        with torch.no_grad():
            model.bits_per_dim(dequantize(first))
    objective: nn.Module = Objective(model)
    if world > 1:
        objective = nn.parallel.DistributedDataParallel(objective, broadcast_buffers=True)
    if compile:
        objective = torch.compile(objective)

    def checkpoint() -> None:
        if world > 1:
            _check_in_step(model)
        if rank == 0:
            save_checkpoint(checkpoint_path, dict(
                model=model.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                step=step, history=history, rng=_rng_state(), model_config=model_config.to_dict(),
                train_config=asdict(train_config), preset=preset,
            ))

    model.train()
    bar = progress(total=total_steps, initial=step, desc=f"{preset}", disable=not progress_bar or rank != 0)
    log = open(out / "metrics.jsonl", "a") if rank == 0 else None
    started = time.perf_counter()
    try:
        while step < total_steps:
            epoch, position = divmod(step, batches_per_epoch)
            order = epoch_order(len(images), epoch, train_config.seed)
            indices = order[position * train_config.batch_size : (position + 1) * train_config.batch_size]
            batch = images[indices[rank::world]].to(resolved)
            with torch.autocast(device_type=resolved.type, dtype=torch.bfloat16, enabled=amp):
                loss = objective(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if train_config.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            record = dict(step=step, epoch=epoch, bits_per_dim=float(loss.detach()), lr=scheduler.get_last_lr()[0],
                          seconds=round(time.perf_counter() - started, 3))
            history.append(record)
            if log is not None:
                log.write(json.dumps(record) + "\n")
                log.flush()
            bar.update(1)
            bar.set_postfix(bpd=f"{record['bits_per_dim']:.3f}")
            if step % train_config.checkpoint_every == 0 or step == total_steps:
                checkpoint()
            end_of_epoch = step % batches_per_epoch == 0 or step == total_steps
            if rank == 0 and end_of_epoch and train_config.samples_per_epoch:
                state_before = _rng_state()  # sampling must not change the training's random stream
                _save_samples(model, train_config.samples_per_epoch, out / f"samples_epoch{epoch + 1}.png", epoch)
                _set_rng_state(state_before)
    except KeyboardInterrupt:
        checkpoint()  # an interrupted run keeps everything up to its last step
        raise
    finally:
        bar.close()
        if log is not None:
            log.close()
    if rank == 0 and history:
        _plot_curves(history, out / "curves.png")
    return dict(model=model, history=history, checkpoint=checkpoint_path, rank=rank, world=world)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m invattn.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS))
    parser.add_argument("--out", required=True, help="folder for the checkpoint, metrics, curves and samples")
    parser.add_argument("--resume", action="store_true", help="continue exactly from OUT/checkpoint.pt")
    parser.add_argument("--steps", type=int, help="total number of steps (default: the preset's epochs)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--dataset", choices=("digits",) + DATASETS)
    parser.add_argument("--data-root")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--checkpoint-every", type=int)
    parser.add_argument("--attention", help="attention kind in the first scale, or 'none'")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    parser.add_argument("--compile", action="store_true", help="torch.compile the training objective")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    training = {k: v for k, v in dict(epochs=args.epochs, dataset=args.dataset, data_root=args.data_root,
                                      batch_size=args.batch_size, checkpoint_every=args.checkpoint_every).items()
                if v is not None}
    model = {}
    if args.attention is not None:
        kinds = [None] * len(PRESETS[args.preset].blocks)
        kinds[0] = None if args.attention == "none" else args.attention
        model["attention"] = tuple(kinds)
    if args.resume and (training or model):
        parser.error("--resume continues the saved run with its own settings; only --steps may be changed")
    result = train(args.preset, args.out, resume=args.resume, steps=args.steps, device=args.device, amp=args.amp,
                   compile=args.compile, model_overrides=model, training_overrides=training,
                   progress_bar=not args.no_progress)
    if result["rank"] == 0 and result["history"]:
        last = result["history"][-1]
        print(f"step {last['step']}: {last['bits_per_dim']:.4f} bits/dim; checkpoint {result['checkpoint']}")
    if dist.is_initialized():
        # every rank reaches the end before any tears the group down: a rank that exits while another still
        # talks to it can abort in gloo's background threads ("terminate called without an active exception")
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
