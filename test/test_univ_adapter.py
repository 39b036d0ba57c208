"""The shipped UNIV adapter: the backbone `univ weights` merges from it is its student.

Checked on held-out real pairs at the node's input size, in float64 (the merge, not fp32
summation order: `univ_core.export.merge.float64_difference`); the fp32 gap is bounded too.
"""

import json
from pathlib import Path

import pytest
import torch

from univ_core.data.paired import PairedRgbtDataset, find_pairs
from univ_core.data.transforms import PairedRandomResizedCrop
from univ_core.export.merge import MERGE_TOLERANCE, float64_difference
from univ_core.models.backbone import PatchEncoder, create_backbone
from univ_core.models.lora import add_lora, load_lora_strict
from univ_core.models.model_file import DEFAULT_INPUT_SIZE
from univ_core.models.univ_weights import UNIV_ADAPTER, ensure_merged, read_lora

# two of the adapter's held-out pairs (its sidecar's data.heldout_pairs): a day and a night frame
HELD_OUT = {'roadscene': ('roadscene', None, 'FLIR_00306'),
            'msrs': ('msrs_mini', 'train', '00022N')}


@pytest.fixture(scope='module')
def images(data_dir: Path) -> torch.Tensor:
    """(4, 3, H, W): RGB and thermal of the two pairs at the node's input size."""
    assert {name for *_, name in HELD_OUT.values()} <= set(
        json.loads(UNIV_ADAPTER.with_suffix('.json').read_text())['data']['heldout_pairs'])
    pairs = [next(p for p in find_pairs(data_dir / folder, layout, split) if p.name == name)
             for layout, (folder, split, name) in HELD_OUT.items()]
    data = PairedRgbtDataset(pairs, train=False, crop=PairedRandomResizedCrop(DEFAULT_INPUT_SIZE))
    return torch.stack([sample[m] for sample in data for m in ('rgb', 'ir')])


def test_the_merged_backbone_is_the_adapters_student(images: torch.Tensor) -> None:
    lora, arch, settings, _ = read_lora(UNIV_ADAPTER)
    student = add_lora(PatchEncoder(create_backbone(arch, 'default')), settings, arch)
    load_lora_strict(student, lora, str(UNIV_ADAPTER))
    student.eval()
    merged = PatchEncoder(create_backbone(arch, str(ensure_merged()))).eval()  # strict timm load
    teacher = PatchEncoder(create_backbone(arch, 'default')).eval()
    with torch.inference_mode():
        tokens = merged(images)
        fp32_gap = float((tokens - student(images)).abs().max())
        moved = float((tokens - teacher(images)).abs().max())
    assert float64_difference(student, merged, images) < MERGE_TOLERANCE
    assert fp32_gap < 1e-3  # fp32 summation order only (1.6e-4 here; README "Pre-training")
    assert moved > 1.0  # the adapter changed the teacher: the comparison is not vacuous


def test_the_merged_backbone_cache_is_keyed_by_settings_too() -> None:
    """alpha scales the merge: the same tensors with another alpha are another backbone."""
    import dataclasses

    from univ_core.models.univ_weights import merged_path

    lora, arch, settings, _ = read_lora(UNIV_ADAPTER)
    shipped = ensure_merged()
    assert merged_path(lora, arch, settings) == shipped  # reused, not rebuilt
    other = merged_path(lora, arch, dataclasses.replace(settings, alpha=settings.alpha / 4))
    try:
        assert other != shipped
    finally:
        other.unlink()
        other.with_suffix('.json').unlink()
