from lightning_rlhf.callbacks.samples import SampleTableLogger

__all__ = ["SampleTableLogger"]
