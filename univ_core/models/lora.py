"""LoRA on a backbone with peft, and its merge into a plain backbone for export."""

import copy
from dataclasses import dataclass

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn


@dataclass
class LoraSettings:
    """LoRA hyper-parameters (UNIV: r 8, alpha 32, dropout 0.1 on qkv/proj/fc1/fc2)."""

    r: int = 8  # rank of the update
    alpha: int = 32  # scaling numerator (update scale = alpha / r)
    dropout: float = 0.1  # dropout on the LoRA branch input
    target_modules: tuple[str, ...] = ('qkv', 'proj', 'fc1', 'fc2')  # module name suffixes

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f'invalid LoRA settings: {self}')
        self.target_modules = tuple(self.target_modules)


def add_lora(model: nn.Module, settings: LoraSettings) -> PeftModel:
    """Freeze ``model`` and inject trainable LoRA adapters into the target modules.

    ``'proj'`` also matches a ViT's ``patch_embed.proj`` convolution (peft supports Conv2d),
    as the official config adapts ConvMAE's patch embedding too. Inject BEFORE wrapping in
    DistributedDataParallel, so that DDP registers (and all-reduces) the LoRA parameters.
    """
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        inference_mode=False,
    )
    return get_peft_model(model, config)


def merge_lora(student: PeftModel) -> nn.Module:
    """A plain copy of the student with every LoRA update merged into its base weights."""
    return copy.deepcopy(student).merge_and_unload()


def trainable_fraction(model: nn.Module) -> tuple[int, int]:
    """(trainable parameters, all parameters)."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
