"""The yardstick: a plain PyTorch training loop written from a recipe YAML's text alone.

    python benchmarks/plain_loop.py configs/cpu/fashion-mnist.yaml --seed 0
    python benchmarks/plain_loop.py configs/cpu/fashion-mnist.yaml --train-subset 2048 --epochs 2 --threads 1
    python benchmarks/plain_loop.py configs/cpu/fashion-mnist.yaml --adopt nesterov,no_wd_1d   # one of our choices
    python benchmarks/plain_loop.py configs/cpu/fashion-mnist.yaml --score runs/<name>         # score a run folder

What it takes from robustscale: only the architecture (``timm.create_model`` + the [0,1]-pixel
``NormalizedModel`` wrapper with the dataset's mean/std), the raw images (``load_dataset``) and the
training subset's indices (``train_val_indices``, so both loops see the same images). Everything else
is what a reader of the YAML would write: ``torch.optim.SGD(model.parameters(), lr, momentum,
weight_decay)`` (weight decay on every parameter, no Nesterov), ``lr = lr_base * batch_size / 256``
with a per-step cosine to ``min_lr`` (linear warm-up over ``warmup_epochs``), a fresh shuffle every
epoch (drop-last batches), pad-and-crop + horizontal flip, PGD-k with a uniform random start and
BatchNorm in eval mode while crafting (``attack_bn_eval``), cross-entropy with the YAML's label
smoothing, channels-last memory when the YAML asks for it, the weights after the last epoch.

Scoring (both for this loop and for ``--score RUN``): clean accuracy and PGD-10 (step 2.5 eps / 10,
uniform random start, eval mode) on the first ``--eval-n`` (1,000) test images, with the count.
``--adopt`` switches on one of robustscale's choices at a time, to attribute a difference:
``nesterov`` (timm's ``sgd`` is Nesterov SGD), ``no_wd_1d`` (timm's default parameter groups: no
weight decay on biases and BatchNorm), ``same_aug`` (robustscale's batch augmentation and batch
order, seeded the same way). Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

ADOPTABLE = ("nesterov", "no_wd_1d", "same_aug")
# Fashion-MNIST / MNIST pad by 2, CIFAR by 4 (the usual recipe); MNIST is never flipped.
PADDING = {"fashion_mnist": 2, "mnist": 2, "cifar10": 4, "cifar100": 4}


def recipe(path: str, overrides: dict) -> dict:
    data = yaml.safe_load(Path(path).read_text()) or {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    defaults = {"seed": 0, "augment": True, "warmup_epochs": 0, "min_lr": 0.0, "label_smoothing": 0.0,
                "attack_bn_eval": True, "momentum": 0.9, "weight_decay": 5e-4, "step_size_factor": 2.5,
                "norm": "linf", "random_start": True}
    out = {**defaults, **data}
    if out.get("norm") != "linf" or out.get("method", "pgd") not in ("pgd", "standard"):
        raise SystemExit("plain_loop covers l-inf PGD-AT and standard training only")
    for key in ("eps", "lr_base", "lr", "weight_decay", "step_size", "label_smoothing"):
        if isinstance(out.get(key), str):
            from fractions import Fraction

            out[key] = float(Fraction(out[key]))
    return out


def build_model(r: dict, in_chans: int, num_classes: int):
    import timm

    import robustscale  # noqa: F401  (registers the CIFAR nets in timm)
    from robustscale.data import dataset_info
    from robustscale.models import NormalizedModel

    info = dataset_info(r["dataset"])
    torch.manual_seed(r["seed"])
    net = timm.create_model(r["model"], pretrained=False, num_classes=num_classes, in_chans=in_chans)
    return NormalizedModel(net, info.mean, info.std)


def pgd_attack(model, x, y, eps: float, step: float, steps: int, generator=None, random_start: bool = True):
    """l-inf PGD with a uniform random start, cross-entropy ascent, projection onto ball and box."""
    delta = (torch.rand(x.shape, generator=generator) * 2 - 1) * eps if random_start else torch.zeros_like(x)
    delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
    for _ in range(steps):
        loss = F.cross_entropy(model(x + delta), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta += step * grad.sign()
            delta.clamp_(-eps, eps)
            delta.copy_((x + delta).clamp(0, 1) - x)
    return (x + delta).detach()


def augment(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop of the original size from a zero-padded image, then a coin-flip mirror (per image)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    out = torch.empty_like(x)
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    mirror = torch.rand(n, generator=generator) < 0.5
    for i in range(n):
        dy, dx = offsets[i].tolist()
        img = padded[i, :, dy:dy + h, dx:dx + w]
        out[i] = img.flip(-1) if flip and mirror[i] else img
    return out


def lr_at(r: dict, step: int, total: int, warmup: int) -> float:
    """Per-step cosine from the peak lr to min_lr, after a linear warm-up of ``warmup`` steps."""
    peak = r["lr"] if r.get("lr") is not None else r["lr_base"] * r["batch_size"] / 256
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(total - warmup, 1)
    return r["min_lr"] + 0.5 * (peak - r["min_lr"]) * (1 + math.cos(math.pi * t))


def make_optimizer(model, r: dict, adopt: set):
    lr = r["lr"] if r.get("lr") is not None else r["lr_base"] * r["batch_size"] / 256
    params = [p for p in model.parameters() if p.requires_grad]
    if "no_wd_1d" in adopt:
        decay = [p for n, p in model.named_parameters() if p.ndim > 1 and not n.endswith(".bias")]
        keep = [p for n, p in model.named_parameters() if not (p.ndim > 1 and not n.endswith(".bias"))]
        params = [{"params": keep, "weight_decay": 0.0}, {"params": decay, "weight_decay": r["weight_decay"]}]
    return torch.optim.SGD(params, lr=lr, momentum=r["momentum"], weight_decay=r["weight_decay"],
                           nesterov="nesterov" in adopt)


def train_images(r: dict):
    """The training subset robustscale trains on (same indices: the validation split left out)."""
    from robustscale.data import load_dataset, train_val_indices

    ds = load_dataset(r["dataset"], "train", r.get("data_dir"))
    train, _ = train_val_indices(ds.targets, r.get("train_subset"), r.get("val_size"), int(r["seed"]))
    return ds.images[train], ds.targets[train]


def batches(r: dict, images, labels, epoch: int, adopt: set):
    """(x float [0,1], y) batches of one epoch, reshuffled every epoch; drop-last."""
    bs = int(r["batch_size"])
    padding, flip = PADDING.get(r["dataset"], 0), r["dataset"] != "mnist"
    if "same_aug" in adopt:  # robustscale's own sampler and batch augmentation
        from robustscale.data.sampler import MixedBatchSampler
        from robustscale.data.transforms import random_crop_flip, to_float

        sampler = MixedBatchSampler(len(images), bs, seed=int(r["seed"]))
        sampler.set_epoch(epoch)
        for key in sampler:
            x = images[key.real]
            if r["augment"]:
                x = random_crop_flip(x, padding, flip, torch.Generator().manual_seed(key.seed))
            yield to_float(x), labels[key.real]
        return
    g = torch.Generator().manual_seed(int(r["seed"]) * 1000 + epoch)
    order = torch.randperm(len(images), generator=g)
    for start in range(0, len(order) - bs + 1, bs):
        idx = order[start:start + bs]
        x = images[idx].float() / 255
        if r["augment"]:
            x = augment(x, padding, flip, g)
        yield x, labels[idx]


def train(r: dict, adopt: set, log=sys.stderr, losses: list | None = None):
    """The trained model (eval mode); ``losses`` (if given) receives every step's loss."""
    images, labels = train_images(r)
    model = build_model(r, images.shape[1], 10)
    memory = torch.channels_last if r.get("channels_last", True) else torch.contiguous_format
    model = model.to(memory_format=memory)
    opt = make_optimizer(model, r, adopt)
    bs, epochs = int(r["batch_size"]), int(r["epochs"])
    steps_per_epoch = len(images) // bs
    total, warmup = epochs * steps_per_epoch, int(r["warmup_epochs"]) * steps_per_epoch
    adversarial = r.get("method", "pgd") != "standard"
    eps = float(r["eps"])
    step = r.get("step_size") or r["step_size_factor"] * eps / int(r["attack_steps"])
    attack_gen = torch.Generator().manual_seed(int(r["seed"]) + 1)
    t = 0
    for epoch in range(epochs):
        model.train()
        loss_sum = n = 0.0
        for x, y in batches(r, images, labels, epoch, adopt):
            x = x.contiguous(memory_format=memory)
            for group in opt.param_groups:
                group["lr"] = lr_at(r, t, total, warmup)
            if adversarial:
                if r["attack_bn_eval"]:
                    model.eval()
                for p in model.parameters():
                    p.requires_grad_(False)
                x = pgd_attack(model, x, y, eps, step, int(r["attack_steps"]), attack_gen, bool(r["random_start"]))
                for p in model.parameters():
                    p.requires_grad_(True)
                model.train()
            loss = F.cross_entropy(model(x), y, label_smoothing=float(r["label_smoothing"]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum, n, t = loss_sum + loss.item() * len(y), n + len(y), t + 1
            if losses is not None:
                losses.append(loss.item())
        print(f"epoch {epoch + 1}/{epochs} loss {loss_sum / n:.4f}", file=log, flush=True)
    return model.eval()


def score(model, dataset: str, eps: float, n: int = 1000, steps: int = 10, seed: int = 0, data_dir=None) -> dict:
    """Clean and PGD-``steps`` accuracy (%) on the first ``n`` test images, eval mode."""
    from robustscale.data import load_eval_tensors

    x_all, y_all = load_eval_tensors(dataset, n, data_dir)
    g = torch.Generator().manual_seed(seed)
    clean = robust = 0
    model.eval()
    for s in range(0, n, 250):
        x, y = x_all[s:s + 250], y_all[s:s + 250]
        with torch.no_grad():
            clean += int((model(x).argmax(1) == y).sum())
        for p in model.parameters():
            p.requires_grad_(False)
        x_adv = pgd_attack(model, x, y, eps, 2.5 * eps / steps, steps, g)
        with torch.no_grad():
            robust += int((model(x_adv).argmax(1) == y).sum())
    return {"clean_acc": 100 * clean / n, "pgd10_robust_acc": 100 * robust / n, "n_examples": n}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config")
    p.add_argument("--seed", type=int)
    p.add_argument("--train-subset", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float, help="an explicit peak lr (default: lr_base * batch_size / 256)")
    p.add_argument("--data-dir")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-n", type=int, default=1000)
    p.add_argument("--adopt", default="", help=f"comma list of robustscale choices to switch on: {', '.join(ADOPTABLE)}")
    p.add_argument("--score", metavar="RUN", help="score a robustscale run folder's last checkpoint instead")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    r = recipe(args.config, {"seed": args.seed, "train_subset": args.train_subset, "epochs": args.epochs,
                             "data_dir": args.data_dir, "lr": args.lr})
    adopt = {a for a in args.adopt.split(",") if a}
    if adopt - set(ADOPTABLE):
        raise SystemExit(f"unknown --adopt {sorted(adopt - set(ADOPTABLE))}; valid: {', '.join(ADOPTABLE)}")
    t0 = time.perf_counter()
    if args.score:
        from robustscale.train import load_run

        _, model = load_run(args.score, "last")
        what = {"scored": args.score}
    else:
        model = train(r, adopt)
        what = {"loop": "plain", "adopt": sorted(adopt), "lr": args.lr}
    res = score(model, r["dataset"], float(r["eps"]), args.eval_n, data_dir=r.get("data_dir"))
    print(json.dumps({**what, "seed": r["seed"], "train_subset": r.get("train_subset"), "epochs": r["epochs"],
                      **res, "seconds": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
