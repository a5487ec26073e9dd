"""The reward-KL frontier: every method's reward against its KL to the SFT policy, over seeds,
beside Best-of-N and scored by a gold judge (``lightning-rlhf-frontier``)."""

from lightning_rlhf.frontier.plan import FrontierSettings, Run, load_settings
from lightning_rlhf.frontier.report import write_frontier
from lightning_rlhf.frontier.sweep import Sweep

__all__ = ["FrontierSettings", "Run", "Sweep", "load_settings", "write_frontier"]
