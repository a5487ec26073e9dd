"""``NonFiniteGuard``: skip bad steps, count them, and stop after too many in a row."""

from __future__ import annotations

from lightning.pytorch.utilities import rank_zero_warn


class NonFiniteGuard:
    """Counts skipped steps; raises ``FloatingPointError`` after ``max_consecutive`` in a row.

    The weights are never updated by a skipped step, so the checkpoint written when the error
    stops the run (``InterruptCheckpoint``) holds the last good state.
    """

    def __init__(self, max_consecutive: int = 5) -> None:
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.skipped = 0

    def bad(self, step: int, what: str) -> None:
        self.skipped += 1
        self.consecutive += 1
        rank_zero_warn(f"step {step}: {what}; skipped this update ({self.consecutive} in a row)")
        if self.consecutive >= self.max_consecutive:
            raise FloatingPointError(
                f"{self.consecutive} consecutive non-finite steps (last at step {step}: {what}); "
                f"stopping. The last good state is in the interrupt checkpoint. Lower the learning "
                f"rate, check the reward for NaN/inf, or use bf16-mixed instead of 16-mixed."
            )

    def good(self) -> None:
        self.consecutive = 0

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.skipped, self.consecutive = int(state["skipped"]), int(state["consecutive"])
