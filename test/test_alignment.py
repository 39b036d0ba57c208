"""`univ eval-alignment`: its metrics on tokens whose answer is known, its pair selection, and a
real run of the CLI."""

import argparse
import json

import pytest
import torch
import torch.nn.functional as F

from univ_core.eval.alignment import alignment_metrics, linear_cka, retrieval, select_pairs

GRID = (3, 4)


def cell_tokens(pairs: int, seed: int = 0) -> torch.Tensor:
    """(P, N, D) unit tokens, a distinct random direction per cell and pair."""
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(pairs, GRID[0] * GRID[1], 64, generator=g), dim=-1)


def test_linear_cka_ignores_rotation_scale_and_offset_but_not_content():
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(1)))
    assert linear_cka(x, 3.0 * x @ rotation + 5.0) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, torch.randn(200, 16, generator=torch.Generator().manual_seed(2))) < 0.2


def test_retrieval_counts_the_same_cell_and_its_neighbours():
    keys = cell_tokens(1)
    same, near = retrieval(keys, keys, GRID)
    assert same.all() and near.all()
    shifted = keys.reshape(1, *GRID, -1).roll(1, dims=2).reshape(keys.shape)  # one column right
    same, near = retrieval(shifted, keys, GRID)
    assert not same.any()
    assert near.float().mean() == pytest.approx(3 / 4)  # the wrapped first column is 3 cells off


def test_a_model_whose_ir_equals_the_teachers_rgb_is_aligned_beyond_position():
    teacher = cell_tokens(4)
    m = alignment_metrics({'ir': teacher, 'rgb': teacher, 'teacher': teacher}, GRID)
    assert m.teacher_top1 == m.own_top1 == 1.0 and m.rgb_cka == pytest.approx(1.0)
    # against another scene's RGB image the same cells hold other content: near chance
    assert m.teacher_within_one_control < 0.5 and m.teacher_scene_dependent > 0.5
    unrelated = alignment_metrics({'ir': cell_tokens(4, seed=9), 'rgb': teacher,
                                   'teacher': teacher}, GRID)
    assert unrelated.teacher_scene_dependent == pytest.approx(0.0, abs=0.2)
    assert unrelated.ir_rgb_cka < m.ir_rgb_cka


def args(**given) -> argparse.Namespace:
    base = dict(pairs=None, data=None, layout='auto', split=None, holdout=0, seed=None)
    return argparse.Namespace(**{**base, **given})


def test_holdout_draws_the_pairs_univ_pretrain_held_out(data_dir, tmp_path):
    from univ_core.train.config import load_config
    from univ_core.train.pretrain import PretrainConfig, build_pairs

    repo = __import__('pathlib').Path(__file__).resolve().parents[1]
    cfg = load_config(PretrainConfig, repo / 'config' / 'pretrain_univ.yaml', [])
    _, held = build_pairs(cfg, repo / 'config')
    mine = select_pairs(args(data=data_dir / 'roadscene', layout='roadscene', holdout=4))
    assert [p.name for p in mine] == [p.name for p in held if p.name.startswith('FLIR')]
    with pytest.raises(ValueError, match='--pairs names its pairs itself; drop --holdout'):
        select_pairs(args(pairs=tmp_path / 'pairs.json', holdout=4))


def test_the_cli_scores_the_teacher_against_itself(data_dir, tmp_path):
    from univ_ros import cli

    out = tmp_path / 'alignment.json'
    assert cli.main(['eval-alignment', '--data', str(data_dir / 'llvip'), '--layout', 'llvip',
                     '--holdout', '3', '--checkpoint', 'none', '--size', '56', '70',
                     '--out', str(out)]) == 0
    result = json.loads(out.read_text())
    assert result['size'] == [56, 70] and len(result['pairs']) == 3
    teacher = result['teacher']  # the teacher's RGB tokens are its own: preservation is exact
    assert teacher['rgb_cka'] == pytest.approx(1.0) and teacher['rgb_within_one'] == 1.0
    assert teacher['teacher_within_one'] == teacher['own_within_one']  # one space here
