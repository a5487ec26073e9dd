from lightning_rlhf.data.datamodule import IMDBDataModule
from lightning_rlhf.data.sources import load_reviews

__all__ = ["IMDBDataModule", "load_reviews"]
