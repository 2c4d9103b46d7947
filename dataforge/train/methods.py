"""What a few peft methods need from the training loop beyond forward and backward.

Most methods (LoRA, IA3, LoHa, prompt tuning, ...) need nothing. AdaLoRA needs its rank allocator
called after every optimizer step, its orthogonality penalty added to the loss (peft adds it only
when the model computes the loss itself, which this loop does not), and the allocator's running
importance scores saved in checkpoints so a resumed run prunes the same ranks.
"""

from __future__ import annotations

from dataforge.errors import ConfigError
from dataforge.train.model import PROMPT_LEARNING


class MethodHooks:
    """No-op hooks: the loop calls these for every method."""

    def extra_loss(self):
        return 0.0

    def after_step(self, step: int) -> None:
        return None

    def checkpoint_objects(self) -> list:
        return []


class _AllocatorState:
    """Makes AdaLoRA's rank allocator checkpointable through `accelerator.register_for_checkpointing`."""

    def __init__(self, tuner, adapter: str):
        self.tuner, self.adapter = tuner, adapter

    def state_dict(self) -> dict:
        alloc = self.tuner.rankallocator
        return {"ipt": alloc.ipt, "exp_avg_ipt": alloc.exp_avg_ipt, "exp_avg_unc": alloc.exp_avg_unc,
                "rank_pattern": self.tuner.peft_config[self.adapter].rank_pattern}

    def load_state_dict(self, state: dict) -> None:
        alloc = self.tuner.rankallocator
        alloc.ipt, alloc.exp_avg_ipt, alloc.exp_avg_unc = state["ipt"], state["exp_avg_ipt"], state["exp_avg_unc"]
        self.tuner.peft_config[self.adapter].rank_pattern = state["rank_pattern"]


class AdaLoraHooks(MethodHooks):
    def __init__(self, peft_model):
        self.tuner = peft_model.base_model
        self.adapter = self.tuner.trainable_adapter_name
        self.weight = self.tuner.peft_config[self.adapter].orth_reg_weight

    def extra_loss(self):
        """peft's orthogonality penalty: mean over LoRA matrices of ||P P^T - I||_F."""
        import torch

        terms = []
        for name, p in self.tuner.model.named_parameters():
            if ("lora_A" in name or "lora_B" in name) and self.adapter in name:
                cov = p @ p.T if "lora_A" in name else p.T @ p
                terms.append(torch.linalg.matrix_norm(cov - torch.eye(*cov.shape, device=cov.device, dtype=cov.dtype)))
        return self.weight * torch.stack(terms).mean() if terms else 0.0

    def after_step(self, step: int) -> None:
        self.tuner.update_and_allocate(step)

    def checkpoint_objects(self) -> list:
        return [_AllocatorState(self.tuner, self.adapter)]


def method_hooks(method: str, model, packed: bool) -> MethodHooks:
    if packed and method in PROMPT_LEARNING:
        raise ConfigError(f"method: {method} prepends virtual tokens to every row, which breaks packed rows; "
                          "train on an unpacked build (data.pack: false)")
    if method == "adalora":
        return AdaLoraHooks(model)
    return MethodHooks()
