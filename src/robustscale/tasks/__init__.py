"""Adversarial training methods as ``timm.task.TrainingTask`` subclasses.

A task is called like timm's ``ClassificationTask``: ``out = task(x, y); out["loss"].backward()``,
so the methods plug into timm's own training loop as well as ours (``robustscale.train``).
``out`` holds ``loss`` (scalar), ``output`` (logits on the examples the loss used: adversarial
for pgd / fgsm_rs / n_fgsm / grad_align / trades, clean for standard), ``x_adv`` (or None) and, only
where it was computed anyway, ``clean_output`` (standard, trades). The single-step methods and PGD
never run an extra clean forward, so they report adversarial training accuracy only.
"""
from .adversarial import (AdversarialTask, FGSMRSTask, GradAlignTask, NFGSMTask, PGDTask, StandardTask, TRADESTask,
                          TASKS, create_task)

__all__ = ["AdversarialTask", "StandardTask", "PGDTask", "TRADESTask", "FGSMRSTask", "NFGSMTask", "GradAlignTask",
           "TASKS", "create_task"]
