"""lightning-rlhf: SFT, reward model and PPO for GPT-2 on IMDB, as Lightning modules."""

__version__ = "0.1.0"
