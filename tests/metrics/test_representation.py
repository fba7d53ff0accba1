import numpy as np
import pytest

from biojepa.metrics import effective_rank, knn_accuracy, silhouette


def test_knn_accuracy_separable_vs_random():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 30)
    separable = np.eye(3)[labels] * 10 + rng.normal(0, 0.1, (90, 3))
    assert knn_accuracy(separable, labels) == 1.0
    assert knn_accuracy(rng.normal(size=(90, 3)), labels) < 0.6


def test_silhouette_hand_computed():
    # a: (0, 1); b: (4, 5). For x=0: a=1, b=mean(4,5)=4.5 -> s=1-1/4.5
    x = np.array([[0.0], [1.0], [4.0], [5.0]])
    s0 = 1 - 1 / 4.5
    s1 = 1 - 1 / 3.5
    assert silhouette(x, ["a", "a", "b", "b"]) == pytest.approx((s0 + s1) * 2 / 4)


def test_effective_rank_line_and_isotropic():
    t = np.linspace(-1, 1, 50)[:, None]
    assert effective_rank(t @ np.array([[1.0, 2.0, 3.0]])) == pytest.approx(1.0)
    assert effective_rank(np.random.default_rng(0).normal(size=(5000, 4))) > 3.9
