"""Labelled pairs -> per-modality training samples at the model input size."""

from dataclasses import dataclass

import numpy as np
import torch

from univ_core.data.evaluation_pairs import is_evaluation_pair
from univ_core.data.labelled import LabelledPairs, open_labelled_dataset
from univ_core.data.paired import split_holdout
from univ_core.inference.preprocess import Preprocessor

MODALITIES = {'rgb': ('rgb',), 'ir': ('thermal',), 'both': ('rgb', 'thermal')}
BOX_KEY = {'rgb': 'rgb', 'thermal': 'ir'}  # sample dict suffix of each modality's boxes


@dataclass
class Split:
    """Where the labelled data is and which part of it is held out for validation."""

    root: str  # dataset folder
    format: str = 'msrs_det'  # a labelled.py format, or autolabel (univ autolabel output)
    split: str = 'train'  # native split to read
    holdout: int = 0  # pairs of that split held out for evaluation (stable, by name hash)
    seed: int = 0  # hashing seed of the holdout
    # leave out the project's evaluation pairs (univ_core/data/evaluation_pairs.py): training
    # on everything else never touches a pair any reported number is measured on
    exclude_evaluation_pairs: bool = False
    only: tuple[str, ...] = ()  # keep only these pair names (stems), e.g. evaluation pairs


def open_split(spec: Split) -> tuple[LabelledPairs, LabelledPairs | None]:
    """(training pairs, held-out pairs or None)."""
    data = open_labelled_dataset(spec.root, spec.format, spec.split)
    stem = lambda item: item.pair.name.rsplit('/', 1)[-1]  # noqa: E731
    if spec.exclude_evaluation_pairs:
        data = data.subset(lambda item: not is_evaluation_pair(item.pair.name))
    if spec.only:
        data = data.subset(lambda item: stem(item) in set(spec.only))
    if not len(data):
        raise ValueError(f'{spec.root}: no pairs left after exclude_evaluation_pairs / only')
    if not spec.holdout:
        return data, None
    train, held = split_holdout([it.pair for it in data.items], spec.holdout, seed=spec.seed)
    keep = {p.name for p in train}
    train_items = [it for it in data.items if it.pair.name in keep]
    held_items = [it for it in data.items if it.pair.name not in keep]
    names = (data.class_names, data.seg_class_names, data.palette)
    return LabelledPairs(train_items, *names), LabelledPairs(held_items, *names) if held else None


def model_inputs(sample: dict, modality: str, prep: Preprocessor) -> tuple[torch.Tensor, dict]:
    """One image of ``sample`` as a (1, 3, h, w) input and its targets at the input size.

    Args:
        sample: a LabelledPairs item (numpy, original pixels).
        modality: 'rgb' or 'thermal'.
        prep: the shared Predictor preprocessing (same resize and normalisation as inference).

    Returns:
        image (1, 3, h, w) float32; targets ``boxes`` (K, 4) float32 xyxy input px, ``labels``
        (K,) int64 and ``mask`` (h, w) int64 or None.
    """
    image = sample[modality]
    x = prep.rgb([image]) if modality == 'rgb' else prep.thermal([image])
    boxes = sample.get(f'boxes_{BOX_KEY[modality]}')
    labels = sample.get(f'labels_{BOX_KEY[modality]}')
    if boxes is None:
        boxes, labels = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    scaled = boxes * prep.box_scale(image.shape[:2])
    mask = None
    if sample.get('mask') is not None:
        m = torch.from_numpy(sample['mask'].astype(np.int64))[None, None].float()
        mask = torch.nn.functional.interpolate(m, size=prep.input_size, mode='nearest')[0, 0]
        mask = mask.long()
    return x, {'boxes': torch.from_numpy(scaled.astype(np.float32)),
               'labels': torch.from_numpy(labels.astype(np.int64)), 'mask': mask}
