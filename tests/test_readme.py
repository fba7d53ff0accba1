"""Every Python snippet of the README runs as written, in order, in a fast setting (one epoch, one CPU device)."""

import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scvi

README = Path(__file__).parents[1] / "README.md"
FAST = [
    (r"max_epochs=\d+", "max_epochs=1"),
    (r'accelerator="gpu", devices=\d+', 'accelerator="cpu", devices=1'),
]


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _fast(code: str) -> str:
    for pattern, repl in FAST:
        code = re.sub(pattern, repl, code)
    return code


def test_readme_has_snippets():
    assert len(_snippets()) >= 5


@pytest.mark.slow
def test_readme_snippets_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    atlas = scvi.data.synthetic_iid(batch_size=100, n_genes=50, n_batches=2)
    atlas.obs = pd.DataFrame({"sample": atlas.obs["batch"].astype(str).to_numpy()}, index=atlas.obs_names)
    atlas.obsm.clear()
    atlas.uns.clear()
    atlas.write_h5ad("atlas.h5ad")  # the user's own file in the "Large data" snippet
    namespace: dict = {}
    for i, code in enumerate(_snippets()):
        exec(compile(_fast(code), f"README.md python snippet {i + 1}", "exec"), namespace)
        plt.close("all")
    assert np.isfinite(namespace["pred"].X).all()
