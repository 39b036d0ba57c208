"""PCCL pseudo labels and loss on hand-made cases."""

import math

import pytest
import torch

from univ_core.losses.pccl import PCCLLoss, attention_positives


def labels_of(rows: list[list[float]], gamma: float = 0.6) -> list[list[float]]:
    return attention_positives(torch.tensor([rows]), gamma)[0].tolist()


def test_prefix_below_gamma_is_positive_and_crossing_key_is_not() -> None:
    # sorted: 0.5 (key 0), 0.3 (key 1) -> cumsum 0.8 > 0.6, so only key 0.
    assert labels_of([[0.5, 0.3, 0.2]]) == [[1, 0, 0]]
    # sorted: 0.4 (key 2), 0.3, 0.3 -> cumsum 0.4, 0.7: the key that crosses 0.6 is excluded.
    assert labels_of([[0.3, 0.3, 0.4]]) == [[0, 0, 1]]


def test_top1_above_gamma_gives_no_positive() -> None:
    assert labels_of([[0.1, 0.7, 0.2]]) == [[0, 0, 0]]


def test_cumulative_mass_equal_to_gamma_is_kept() -> None:
    # Dyadic values: cumsum 0.5, 0.75 exactly, 0.875, 1.0.
    assert labels_of([[0.125, 0.5, 0.125, 0.25]], gamma=0.75) == [[0, 1, 0, 1]]


def test_rows_are_independent_and_batched() -> None:
    attn = torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.7, 0.2], [0.25, 0.25, 0.5]]] * 2)
    labels = attention_positives(attn)
    assert labels.shape == (2, 3, 3) and labels.dtype == torch.float32
    assert labels[1].tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]


def test_loss_matches_hand_computation() -> None:
    student = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (1, 2, 2)
    teacher = torch.tensor([[[2.0, 0.0], [1.0, 1.0]]])  # norms do not matter (cosine)
    labels = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    c = 1 / math.sqrt(2)
    logits = [[1 / 0.04, c / 0.04], [0.0, c / 0.04]]

    def bce(x: float, y: float) -> float:  # -y log s(x) - (1-y) log(1-s(x))
        return y * math.log1p(math.exp(-x)) + (1 - y) * (x + math.log1p(math.exp(-x)))

    pairs = [(i, j) for i in range(2) for j in range(2)]
    expected = sum(bce(logits[i][j], labels[0, i, j].item()) for i, j in pairs) / 4
    loss = PCCLLoss(temperature=0.04)(student, teacher, labels).item()
    assert loss == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(4.5927, abs=1e-3)


def test_loss_rejects_mismatched_token_grids() -> None:
    with pytest.raises(ValueError, match='same patch grid'):
        PCCLLoss()(torch.zeros(1, 4, 8), torch.zeros(1, 6, 8), torch.zeros(1, 4, 6))


def test_centred_pccl_ignores_a_shared_offset_and_equals_the_loss_on_centred_tokens() -> None:
    """center=True: the per-image mean token is removed from both sides before the cosine."""
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    labels = (torch.rand(2, 6, 6) > 0.7).float()
    centred = PCCLLoss(0.04, center=True)
    offset = torch.randn(2, 1, 8) * 10  # one direction shared by every token of an image
    assert torch.allclose(centred(student + offset, teacher - offset, labels),
                          centred(student, teacher, labels), atol=1e-5)
    plain = PCCLLoss(0.04)
    expected = plain(student - student.mean(1, keepdim=True),
                     teacher - teacher.mean(1, keepdim=True), labels)
    assert torch.allclose(centred(student, teacher, labels), expected, atol=1e-6)
    assert not torch.allclose(plain(student + offset, teacher, labels),
                              plain(student, teacher, labels), atol=1e-3)
