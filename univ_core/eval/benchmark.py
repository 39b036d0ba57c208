"""The accuracy benchmark of a model on the evaluation pairs (never trained on), per modality.

- Detection, MSRS: the 8 ``MSRS_TEST`` pairs against their real MSRS-detection boxes (RGB
  boxes score RGB, thermal boxes thermal, their union fused), mAP50 / mAP and AP50 per class;
  and RGB and thermal against that union too (``vs_either``): the common truth on which the
  three camera choices compare (fused >= the better camera is judged there).
- Detection, LLVIP: the 9 ``LLVIP_TEST`` pairs against LLVIP's own person boxes (one list for
  both images), person AP50 per modality.
- Segmentation: the daytime ``ROADSCENE_TEST`` frames against the segmentation teacher's masks
  of the RGB image (made here with ``univ autolabel``'s labeller: same classes, confidence cut
  and night rule), mIoU and IoU per class on the RGB image, on the thermal image of the same
  pair (the RGB -> thermal transfer the package exists for) and fused (the two images' class
  probabilities averaged, what the node publishes from a pair).

mAP follows the COCO protocol (every box down to ``eval_score_threshold``, at most
``max_detections`` per image), separately from the deployment threshold.
"""

from pathlib import Path

from univ_core.data.evaluation_pairs import LLVIP_TEST, MSRS_TEST, ROADSCENE_TEST
from univ_core.data.home import data_home
from univ_core.data.paired import find_pairs, load_pair
from univ_core.eval.downstream import evaluate
from univ_core.train.downstream_data import Split, open_split


def detection_sets(data: Path) -> dict:
    """The evaluation pairs with real boxes: {"msrs": ..., "llvip": ...} labelled pairs."""
    msrs, _ = open_split(Split(str(data / 'msrs_mini'), 'msrs_det', only=MSRS_TEST))
    llvip, _ = open_split(Split(str(data / 'llvip'), 'llvip', only=LLVIP_TEST))
    return {'msrs': msrs, 'llvip': llvip}


def segmentation_set(data: Path, labeller) -> list[dict]:
    """The daytime ROADSCENE_TEST pairs with the teacher's mask of the RGB image."""
    pairs = [p for p in find_pairs(data / 'roadscene', 'roadscene') if p.name in ROADSCENE_TEST]
    samples = []
    for pair in pairs:
        rgb, thermal = load_pair(pair)
        labels = labeller.label(rgb, thermal)
        if not labels.night:
            samples.append({'rgb': rgb, 'thermal': thermal, 'mask': labels.mask,
                            'name': pair.name})
    return samples


def benchmark(predictor, data: Path | None = None, segmentation: bool = True) -> dict:
    """Every number of the module docstring for ``predictor`` (a Predictor)."""
    data = Path(data or data_home())
    results: dict = {'detection': {}, 'segmentation': None}
    if predictor.det_classes:
        for name, pairs in detection_sets(data).items():
            metrics, _ = evaluate('det', predictor, pairs, ['rgb', 'ir', 'fused'])
            results['detection'][name] = {'pairs': [it.pair.name for it in pairs.items],
                                          **metrics}
            if name == 'msrs':  # LLVIP has one box list for both cameras: the same numbers
                either, _ = evaluate('det', predictor, pairs, ['rgb', 'ir'], truth='either')
                results['detection'][name]['vs_either'] = either
    if segmentation and predictor.seg_classes:
        from univ_core.autolabel.config import AutolabelConfig
        from univ_core.autolabel.run import load_labeller

        labeller = load_labeller(AutolabelConfig(detector='none'))
        if list(labeller.table.seg_classes) != list(predictor.seg_classes):
            raise ValueError(f'model segmentation classes {predictor.seg_classes} differ from '
                             f'the autolabel table {labeller.table.seg_classes}')
        samples = segmentation_set(data, labeller)
        metrics, _ = evaluate('seg', predictor, samples, ['rgb', 'ir', 'fused'],
                              class_names=list(predictor.seg_classes))
        results['segmentation'] = {'pairs': [s['name'] for s in samples], **metrics}
    return results


def headline(results: dict) -> dict[str, float]:
    """The few numbers the README and the model's sidecar print."""
    out = {}
    for name, sets in results['detection'].items():
        for modality in ('rgb', 'ir', 'fused'):
            out[f'{name}_{modality}_map50'] = sets[modality]['map50']
        for modality, metrics in sets.get('vs_either', {}).items():
            out[f'{name}_{modality}_vs_either_map50'] = metrics['map50']
    if results['segmentation']:
        for modality in ('rgb', 'ir', 'fused'):
            out[f'roadscene_day_{modality}_miou'] = results['segmentation'][modality]['miou']
    return out
