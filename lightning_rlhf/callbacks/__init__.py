from lightning_rlhf.callbacks.interrupt import InterruptCheckpoint
from lightning_rlhf.callbacks.progress import RunProgress
from lightning_rlhf.callbacks.samples import SampleTableLogger

__all__ = ["InterruptCheckpoint", "RunProgress", "SampleTableLogger"]
