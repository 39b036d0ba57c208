"""Toy backbones for fast CPU tests (random weights, tiny width/depth)."""

from univ_core.models.backbone import create_backbone

TOY_ARCH = 'vit_small_patch14_dinov2'
TOY = {'depth': 2, 'embed_dim': 32, 'num_heads': 2, 'img_size': 56}


def toy_backbone(**overrides):
    return create_backbone(TOY_ARCH, 'none', **{**TOY, **overrides})


MFNET_CLASSES = ['unlabeled', 'car', 'person', 'bike', 'curve', 'car_stop', 'guardrail',
                 'color_cone', 'bump']
MSRS_DET_CLASSES = ['person', 'bicycle', 'car']


def write_toy_model(path, input_size=(56, 70), seed: int = 0):
    """A tiny random UNIV model file (backbone + seg + det heads): fast on CPU, outputs random."""
    import torch

    from univ_core.models.model_file import ModelSpec, build_model, save_model

    spec = ModelSpec(TOY_ARCH, MFNET_CLASSES, MSRS_DET_CLASSES, input_size, head_channels=32,
                     backbone_overrides=dict(TOY))
    torch.manual_seed(seed)
    return save_model(path, build_model(spec), spec)
