import anndata as ad
import numpy as np
import pandas as pd
import pytest

import biojepa as bj
from biojepa.tl import INTERACTION_TYPES, InteractionFit, call_interaction, fit_interaction, interaction_calls


def test_fit_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=200), rng.normal(size=200)
    fit = fit_interaction(0.5 * a + 2.0 * b + 0.01 * rng.normal(size=200), a, b)
    assert fit.c_a == pytest.approx(0.5, abs=0.01) and fit.c_b == pytest.approx(2.0, abs=0.01)
    assert fit.dominance == pytest.approx(4.0, rel=0.05) and fit.fit_r > 0.99
    assert call_interaction(fit) == "dominant"
    new = fit_interaction(rng.normal(size=200), a, b)  # unrelated to its members: neomorphic
    assert call_interaction(new) == "neomorphic"


@pytest.mark.parametrize(
    ("coefs", "expected"), [((1.0, 1.0), "additive"), ((1.6, 1.5), "synergy"), ((0.5, 0.6), "suppression")]
)
def test_calls_follow_the_magnitude(coefs, expected):
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=100), rng.normal(size=100)
    singles = ad.AnnData(np.zeros((2, 100)), obs=pd.DataFrame({"p": ["A", "B"], "line": "x"}, index=["0", "1"]))
    singles.layers["delta"] = np.stack([a, b])
    doubles = ad.AnnData(np.zeros((2, 100)), obs=pd.DataFrame({"p": ["B+A", "A+C"], "line": "x"}, index=["0", "1"]))
    doubles.layers["delta"] = np.stack([coefs[0] * a + coefs[1] * b, a])
    calls = interaction_calls(doubles, singles, "p", covariate_keys=["line"])
    assert calls["p"].tolist() == ["B+A"]  # A+C: C has no single
    assert calls["call"].tolist() == [expected] and set(calls["call"]) <= set(INTERACTION_TYPES)


def test_calls_of_norman_tables_span_the_categories():
    gi = bj.datasets.norman2019_gi_tables()["regr_fits_final"]
    calls = [
        call_interaction(
            InteractionFit(a, b, np.sqrt((a**2 + b**2) / 2), max(abs(a), abs(b)) / max(min(abs(a), abs(b)), 1e-9), r)
        )
        for a, b, r in gi[["coef_first", "coef_second", "corr_fit"]].to_numpy()
    ]
    counts = pd.Series(calls).value_counts()
    assert len(counts) >= 4 and counts.max() < 0.8 * len(calls)


def test_missing_delta_layer_is_an_error():
    data = ad.AnnData(np.zeros((1, 2)), obs=pd.DataFrame({"p": ["A+B"]}, index=["0"]))
    with pytest.raises(KeyError, match="delta"):
        interaction_calls(data, data, "p")
