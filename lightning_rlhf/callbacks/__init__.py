from lightning_rlhf.callbacks.checkpoint import LastAndBestCheckpoint
from lightning_rlhf.callbacks.interrupt import InterruptCheckpoint
from lightning_rlhf.callbacks.progress import RunProgress
from lightning_rlhf.callbacks.samples import SampleTableLogger
from lightning_rlhf.callbacks.snapshots import PolicySnapshots

__all__ = ["InterruptCheckpoint", "LastAndBestCheckpoint", "PolicySnapshots", "RunProgress", "SampleTableLogger"]
