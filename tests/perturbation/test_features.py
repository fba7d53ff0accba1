"""The perturbation feature table: one checked table per model."""

import numpy as np
import pandas as pd
import pytest

from biojepa.perturbation import PerturbationFeatures


def test_lookup_aligns_rows_and_marks_missing_names():
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [0, 1]}, index=["drugA", "drugB"])
    table = PerturbationFeatures.from_frame(frame)
    values, known = table.lookup(["drugB", "nope", "drugA"])
    np.testing.assert_array_equal(values, [[2.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    assert known.tolist() == [True, False, True]
    assert table.columns == ("a", "b") and table.n_features == 2
    pd.testing.assert_frame_equal(table.to_frame(), frame.astype(np.float32))


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (np.zeros((2, 2)), "pandas DataFrame"),
        (pd.DataFrame(index=["a"]), "empty"),
        (pd.DataFrame({"f": [1.0, 2.0]}, index=["a", "a"]), r"duplicated names \['a'\]"),
        (pd.DataFrame({"f": ["x", "y"]}, index=["a", "b"]), r"columns \['f'\] are not numeric"),
        (pd.DataFrame({"f": [1.0, np.nan]}, index=["a", "b"]), r"NaN or infinite values for \['b'\]"),
    ],
)
def test_bad_tables_name_the_problem(frame, match):
    with pytest.raises((TypeError, ValueError), match=match):
        PerturbationFeatures.from_frame(frame)
