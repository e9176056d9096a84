"""Training: one process, torchrun/DDP or a Slurm step over several nodes; adversarial methods as timm tasks.

``train(cfg)`` writes a run folder ``<cfg.output_dir>/<cfg.name>/`` (layout: :mod:`robustscale.rundir`):
config.yaml, env.json, metrics.jsonl, last/best.safetensors (the inner timm model's state dict, EMA
weights when EMA is on; model name, dataset, mean/std in the metadata), state.pt (everything needed to
resume: weights, optimizer, scheduler, EMA, scaler, RNG states of every rank, epoch and step within it,
partial epoch metrics) and summary.json (the run record: robustscale.schema columns + details).

Speed: the fast path is the default (channels-last, cudnn.benchmark and TF32 on GPU, no extra clean
forward, input-gradient-only attack steps). Training accuracy on the progress bar is measured on the
examples the loss used (adversarial ones for pgd / fgsm_rs / trades); clean training accuracy is shown
only where the clean logits exist anyway (standard, trades).

Interrupts: the first Ctrl-C stops at the end of the current step (ranks agree under DDP) and saves a
resumable state; a second one raises at once. ``resume=<run_dir>`` continues bit-for-bit on CPU with
``deterministic``, also on another number of processes: ``batch_size`` is global (= ranks x
``micro_batch_size`` x accumulation steps, the run keeps its micro-batch), and batches and each
micro-batch's randomness depend only on (seed, epoch, global slot). See docs/multi-node.md.

Modules: ``loop`` (``train``, the Trainer), ``step`` (the training step, also timed by ``robustscale
bench``), ``state`` (counters, state.pt, RNG), ``distributed``, ``interrupts``, ``backends`` (compile,
cuDNN, autocast), ``evaluate`` (the per-epoch check), ``summary`` (metrics.jsonl, summary.json).
"""
from ..rundir import load_run, load_weights, save_weights
from .backends import AUTO_COMPILE_MIN_TRAIN_FLOPS, have_cpp_compiler, should_compile  # noqa: F401
from .interrupts import TrainingDiverged
from .loop import run_name, train
from .state import STATE_VERSION
from .step import TrainStep, build_step, eps_at

_eps_at = eps_at  # the name tests and old callers use

__all__ = ["train", "load_run", "run_name", "save_weights", "load_weights", "should_compile", "TrainingDiverged",
           "STATE_VERSION", "AUTO_COMPILE_MIN_TRAIN_FLOPS", "TrainStep", "build_step", "eps_at"]
