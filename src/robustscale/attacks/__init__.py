"""Training-time attacks: pure functions on a model taking [0,1] pixels.

All attacks compute only the input gradient (``torch.autograd.grad`` w.r.t. the perturbation, with
the parameters' ``requires_grad`` switched off meanwhile), so an attack step costs a forward plus an
input-gradient backward and never touches parameters' ``.grad``. They run the model in whatever
train/eval mode the caller set (the tasks put BatchNorm in eval mode when ``attack_bn_eval``).
The exception is :func:`grad_align_penalty`, a training-loss term that needs the weight gradient of an
input gradient (a double backward).
"""
from ._common import feasible_bounds, input_grad_only, project_, uniform_start
from .fgsm import fgsm, fgsm_rs
from .grad_align import grad_align_penalty, gradient_cosine
from .nfgsm import n_fgsm
from .pgd import attack_loss, pgd
from .trades import trades_inner_max, trades_kl

__all__ = ["pgd", "fgsm", "fgsm_rs", "n_fgsm", "grad_align_penalty", "gradient_cosine", "trades_inner_max",
           "trades_kl", "attack_loss", "feasible_bounds", "input_grad_only", "project_", "uniform_start"]
