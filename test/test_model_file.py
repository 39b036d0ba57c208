"""Compact model files: fp16 heads only, the backbone rebuilt from the embedded teacher at load."""

import torch

from univ_core.models.model_file import ModelSpec, build_model, load_model, save_model


def test_compact_file_with_a_named_backbone_round_trips(tmp_path):
    spec = ModelSpec(arch='vit_small_patch14_dinov2', seg_classes=['a', 'b', 'c'],
                     det_classes=['person', 'car'], input_size=(56, 70), head_channels=32,
                     backbone='default')
    model = build_model(spec, 'default').eval()
    path = save_model(tmp_path / 'compact.safetensors', model, spec)
    assert path.stat().st_size < 5e6  # no backbone inside (ViT-S alone is ~88 MB)
    loaded, got = load_model(path)
    assert got == spec
    for name, tensor in model.backbone.state_dict().items():  # the teacher, rebuilt
        assert torch.equal(loaded.backbone.state_dict()[name], tensor), name
    for name, tensor in model.head_state_dict().items():  # heads, through fp16
        assert torch.equal(loaded.head_state_dict()[name], tensor.half().float()), name


def test_atomic_writes_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    import os

    from univ_core.train.checkpoint import save_state, write_json

    old = os.umask(0o022)
    try:
        paths = [save_state(tmp_path / 'last.pt', {'step': 1}),
                 write_json(tmp_path / 'summary.json', {'a': 1})]
    finally:
        os.umask(old)
    assert [oct(p.stat().st_mode & 0o777) for p in paths] == ['0o644', '0o644']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['last.pt', 'summary.json']  # no temp
