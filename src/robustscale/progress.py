"""Progress over named stages of a long computation (a tqdm bar; a no-op when disabled)."""
from __future__ import annotations

from tqdm import tqdm

__all__ = ["StageBar"]


class StageBar:
    """A tqdm bar with one tick per stage of ``steps``; ``step(name)`` enters the next stage.

    Usage: ``bar = StageBar(["load", "fit"], "paper reproduction", enabled)``, ``bar.step("load")``, ...,
    ``bar.close()``.
    """

    def __init__(self, steps: list[str], desc: str, enabled: bool = True):
        self.bar = None
        if enabled:
            self.bar = tqdm(total=len(steps), desc=desc, unit="stage", dynamic_ncols=True)
        self.started = False

    def step(self, name: str) -> None:
        if self.bar is None:
            return
        if self.started:
            self.bar.update(1)
        self.started = True
        self.bar.set_postfix_str(name)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.close()
