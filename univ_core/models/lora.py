"""LoRA on a backbone with peft, its strict loading, and its merge into a plain backbone."""

import copy
import dataclasses
from dataclasses import dataclass

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

VIT_TARGETS = ('qkv', 'proj', 'fc1', 'fc2')  # what the shipped ViT-S adapter was trained with
# Per arch family (the name before the first '_'). The official UNIV config (configs/mcmae.yaml)
# also adapts ConvMAE's patch_embed4, the Linear before stage 3; its decoder_embed and
# decoder_pred targets sit in the MAE decoder, which UNIV never runs and this model leaves out.
FAMILY_TARGETS = {'convmae': (*VIT_TARGETS, 'patch_embed4')}


def default_targets(arch: str) -> tuple[str, ...]:
    """The LoRA target module suffixes of ``arch`` (timm name): the official ones per family."""
    return FAMILY_TARGETS.get(arch.split('_')[0], VIT_TARGETS)


@dataclass
class LoraSettings:
    """LoRA hyper-parameters (UNIV: r 8, alpha 32, dropout 0.1 on qkv/proj/fc1/fc2 [+ arch's])."""

    r: int = 8  # rank of the update
    alpha: int = 32  # scaling numerator (update scale = alpha / r)
    dropout: float = 0.1  # dropout on the LoRA branch input
    target_modules: tuple[str, ...] | None = None  # module name suffixes; None: default_targets

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f'invalid LoRA settings: {self}')
        if self.target_modules is not None:
            self.target_modules = tuple(self.target_modules)

    def for_arch(self, arch: str) -> 'LoraSettings':
        """These settings with ``target_modules`` resolved for ``arch`` where left None."""
        if self.target_modules is not None:
            return self
        return dataclasses.replace(self, target_modules=default_targets(arch))


def add_lora(model: nn.Module, settings: LoraSettings, arch: str) -> PeftModel:
    """Freeze ``model`` and inject trainable LoRA adapters into the target modules.

    Targets are suffixes of module names: ``'proj'`` also matches a ViT's ``patch_embed.proj``
    and ConvMAE's ``patch_embed{1,2,3}.proj`` convolutions, ``fc1``/``fc2`` ConvMAE's 1x1-conv
    MLPs (peft supports Conv2d), as in the official code. ``arch`` picks the default targets
    when ``settings.target_modules`` is None. Inject BEFORE wrapping in
    DistributedDataParallel, so that DDP registers (and all-reduces) the LoRA parameters.
    """
    settings = settings.for_arch(arch)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        inference_mode=False,
    )
    return get_peft_model(model, config)


def lora_state(student: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable (LoRA) tensors of the student, by name."""
    return {n: p.detach() for n, p in student.named_parameters() if p.requires_grad}


def load_lora_strict(student: nn.Module, lora: dict[str, torch.Tensor], where: str) -> None:
    """Load LoRA tensors; every LoRA parameter of ``student`` must be there, nothing else.

    Raises:
        ValueError: a key missing or unexpected, or a tensor of another shape; names ``where``
            (the file) and the keys.
    """
    missing, unexpected, wrong = state_mismatch(lora_state(student), lora)
    if missing or unexpected:
        raise ValueError(f'{where}: LoRA tensors do not fit this student (missing {missing[:3]}, '
                         f'unexpected {unexpected[:3]}): another arch or LoRA setting?')
    if wrong:  # checked here: load_state_dict's own error names neither file nor all keys
        raise ValueError(f'{where}: LoRA tensors of another shape (file != student): '
                         f'{wrong[:3]}: another LoRA rank or model size?')
    student.load_state_dict(lora, strict=False)  # strict over LoRA keys, checked above


def merge_lora(student: PeftModel) -> nn.Module:
    """A plain copy of the student with every LoRA update merged into its base weights."""
    return copy.deepcopy(student).merge_and_unload()


def trainable_fraction(model: nn.Module) -> tuple[int, int]:
    """(trainable parameters, all parameters)."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def state_mismatch(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]
                   ) -> tuple[list[str], list[str], list[str]]:
    """(missing keys, unexpected keys, 'key (file shape) != (model shape)') of ``state``.

    Shapes are compared only when the keys match, so callers can name every problem before
    ``load_state_dict`` raises its own, less specific error.
    """
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [] if missing or unexpected else [
        f'{k} {tuple(state[k].shape)} != {tuple(v.shape)}' for k, v in expected.items()
        if state[k].shape != v.shape]
    return missing, unexpected, wrong
