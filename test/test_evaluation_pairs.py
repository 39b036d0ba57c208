"""The named evaluation pairs are what the documented holdout rule gives on the real data."""

from univ_core.data.evaluation_pairs import LLVIP_TEST, MSRS_TEST, ROADSCENE_TEST
from univ_core.data.paired import find_pairs, split_holdout


def test_msrs_and_roadscene_test_pairs_are_the_seed_0_holdouts(data_dir):
    msrs = find_pairs(data_dir / 'msrs_mini', 'msrs', 'train')
    assert tuple(p.name for p in split_holdout(msrs, 8, seed=0)[1]) == MSRS_TEST
    roadscene = find_pairs(data_dir / 'roadscene', 'roadscene')
    assert tuple(p.name for p in split_holdout(roadscene, 20, seed=0)[1]) == ROADSCENE_TEST


def test_llvip_test_pairs_are_the_ones_with_llvips_own_boxes(data_dir):
    annotated = sorted(p.stem for p in (data_dir / 'llvip' / 'Annotations').glob('*.xml'))
    assert tuple(annotated) == LLVIP_TEST
