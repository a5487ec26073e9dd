from lightning_rlhf.modules.dpo import DPOModule
from lightning_rlhf.modules.ppo import PPOModule
from lightning_rlhf.modules.reward_model import RewardModelModule
from lightning_rlhf.modules.sft import SFTModule

__all__ = ["DPOModule", "PPOModule", "RewardModelModule", "SFTModule"]
