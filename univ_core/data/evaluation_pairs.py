"""The pairs of ../shared/data that every accuracy number is measured on: never trained on.

Listed by name so that training configs, the default model and the tests agree on them, and a
change of the data or of a hashing seed cannot move a test pair into training unnoticed
(``test/test_evaluation_pairs.py`` recomputes them):

- ``MSRS_TEST``: msrs_mini's 8 pairs held out by ``split_holdout(..., 8, seed=0)`` (the
  transfer protocol's; 2 day, 6 night), scored against the real MSRS-detection boxes.
- ``LLVIP_TEST``: the 9 LLVIP pairs with LLVIP's own person boxes (night).
- ``ROADSCENE_TEST``: 20 RoadScene pairs held out by ``split_holdout(..., 20, seed=0)``;
  segmentation is scored on its daytime frames against the teacher's masks.
"""

MSRS_TEST = ('00001D', '00006N', '00010N', '00019N', '00022N', '00039N', '00556D', '00881N')
LLVIP_TEST = tuple(f'0100{i:02d}' for i in range(1, 10))
ROADSCENE_TEST = (
    'FLIR_00497', 'FLIR_01415', 'FLIR_04071', 'FLIR_04302', 'FLIR_04688', 'FLIR_05245',
    'FLIR_05514', 'FLIR_05767', 'FLIR_06407', 'FLIR_06535', 'FLIR_06892', 'FLIR_07028',
    'FLIR_07786', 'FLIR_08835', 'FLIR_08865', 'FLIR_08932', 'FLIR_08954', 'FLIR_08970',
    'FLIR_09652', 'FLIR_video_00248')
EVALUATION_PAIRS = frozenset(MSRS_TEST + LLVIP_TEST + ROADSCENE_TEST)


def is_evaluation_pair(name: str) -> bool:
    """Whether a pair name (a stem, or 'split/stem') is one of the evaluation pairs."""
    return name.rsplit('/', 1)[-1] in EVALUATION_PAIRS
