"""The expression prior of never-perturbed genes (:mod:`biojepa.model._coexpression`)."""

import numpy as np

from biojepa.model._coexpression import CoexpressionPrior, coexpression_prior, prior_weights


def _singles(n=30, n_genes=60, noise=0.05, seed=0):
    """Changes of ``n`` knockouts (own gene -1); the first half also lower genes 50-51 with their own gene 40."""
    rng = np.random.default_rng(seed)
    changes = rng.normal(0, noise, (n, n_genes))
    columns = np.arange(n)
    changes[columns, columns] -= 1.0
    changes[: n // 2, 40] -= 0.8
    changes[: n // 2, 50:52] -= 0.6
    return changes, columns


def test_slope_recovers_the_genes_that_move_with_the_gene():
    changes, columns = _singles()
    own, slope = coexpression_prior(changes, columns, column=40)
    t = changes[columns, columns].mean()
    np.testing.assert_allclose(own[40], t - changes[:, 40].mean())
    assert own[np.arange(60) != 40].tolist() == [0.0] * 59 and slope[40] == 0.0
    # genes 50-51 fall with gene 40 at 0.6 / 0.8 of its fall, so a knockout of 40 is read as lowering them
    np.testing.assert_allclose(slope[50:52], 0.75 * own[40], rtol=0.1)
    others = np.setdiff1d(np.arange(30, 60), [40, 50, 51])
    assert np.abs(slope[others]).max() < 0.2 * np.abs(slope[50:52]).min()


def test_weights_follow_what_predicts_left_out_singles():
    changes, columns = _singles()
    own_w, slope_w = prior_weights(changes, columns)
    assert own_w > 0.9  # every knockout lowers its own gene
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.05, changes.shape)
    assert prior_weights(noise, columns)[0] < 0.2  # no own effect: its part is not trusted
    assert prior_weights(noise, columns)[1] < 0.2  # genes co-vary by chance only
    assert 0.0 <= slope_w <= 1.0
    assert prior_weights(changes[:2], columns[:2]) == (0.0, 0.0)  # too few singles to choose


def test_prior_is_the_weighted_sum_of_its_parts():
    changes, columns = _singles()
    own, slope = coexpression_prior(changes, columns, 40)
    np.testing.assert_allclose(CoexpressionPrior(changes, columns, None, 0.5, 0.25)(40), 0.5 * own + 0.25 * slope)
    assert not CoexpressionPrior(changes, columns, None, 0.0, 0.0)(40).any()


def test_slopes_of_a_gene_whose_changes_are_noise_are_shrunk_away():
    changes, columns = _singles(noise=0.05)
    variances = np.full(changes.shape, 0.05**2)
    _, noisy = coexpression_prior(changes, columns, 45)  # gene 45 only carries noise over the singles
    _, shrunk = coexpression_prior(changes, columns, 45, variances)
    _, kept = coexpression_prior(changes, columns, 40, variances)
    assert np.abs(shrunk).max() < 0.5 * np.abs(noisy).max()
    np.testing.assert_allclose(kept, coexpression_prior(changes, columns, 40)[1], rtol=0.05, atol=1e-3)
