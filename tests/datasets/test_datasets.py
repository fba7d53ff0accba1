import logging
import re
import shutil
from dataclasses import FrozenInstanceError, replace
from pathlib import Path
from types import MappingProxyType

import anndata as ad
import mudata as md
import pandas as pd
import pytest

from biojepa import datasets
from biojepa.datasets import _load, _registry

PERTURBENCH = _registry.PERTURBENCH_DEVEL
SMALL_NO_URL = _registry.GUO_EMBRYO  # 160 kB, no public URL


def _with_url(monkeypatch: pytest.MonkeyPatch, name: str, url: str | None) -> None:
    entries = dict(_registry.REGISTRY)
    entries[name] = replace(entries[name], url=url)
    monkeypatch.setattr(_registry, "REGISTRY", MappingProxyType(entries))


@pytest.fixture(scope="module")
def real() -> dict[str, Path]:
    """Real, verified paths (via BIOJEPA_DATA_DIR or ../shared/data), resolved before any test changes the env."""
    return {name: datasets.data_path(name) for name in (SMALL_NO_URL, PERTURBENCH)}


@pytest.fixture
def empty_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    empty = tmp_path / "empty_data"
    empty.mkdir()
    monkeypatch.setenv("BIOJEPA_DATA_DIR", str(empty))
    monkeypatch.setenv("BIOJEPA_CACHE_DIR", str(tmp_path / "cache"))
    return empty


@pytest.mark.parametrize(
    ("loader", "shape"),
    [
        (datasets.perturbench_devel, (5961, 500)),
        (datasets.norman2019_perturbench, (3375, 500)),
        (datasets.norman2019_gears_tiny, (50, 50)),
        (datasets.sergio_knockout_sim, (6200, 500)),
        (datasets.kang2018_ifnb, (1556, 1267)),
        (datasets.hsmm_myoblast_timecourse, (271, 47192)),
        (datasets.flu_h3n2_challenge, (252, 4147)),
        (datasets.guo2010_mouse_embryo, (428, 48)),
    ],
)
def test_anndata_loaders(loader, shape):
    adata = loader()
    assert type(adata) is ad.AnnData
    assert (adata.n_obs, adata.n_vars) == shape
    assert not adata.is_view
    adata.obs["probe"] = 1  # every call returns a fresh object read from disk
    assert "probe" not in loader().obs


@pytest.mark.parametrize(
    ("loader", "n_obs", "mods"),
    [
        (datasets.ecciteseq_mimitou2019, 500, {"rna": 19521, "adt": 49, "hto": 4}),
        (datasets.multiome_pbmc_toy, 1000, {"rna": 45, "atac": 174}),
    ],
)
def test_mudata_loaders(loader, n_obs, mods):
    mdata = loader()
    assert isinstance(mdata, md.MuData)
    assert mdata.n_obs == n_obs
    assert {name: mod.shape for name, mod in mdata.mod.items()} == {name: (n_obs, n) for name, n in mods.items()}


def test_gi_tables():
    tables = datasets.norman2019_gi_tables()
    names = "perturbseq_single_phenotype_table processed_perturbseq_emap processed_perturbseq_fitnesses regr_fits_final"
    assert sorted(tables) == names.split()
    assert all(isinstance(t, pd.DataFrame) and t.index.is_unique for t in tables.values())
    assert tables["processed_perturbseq_emap"].shape == (104, 104)
    assert tables["processed_perturbseq_fitnesses"].shape == (104, 104)
    assert list(tables["processed_perturbseq_emap"].index) == list(tables["processed_perturbseq_emap"].columns)
    assert tables["perturbseq_single_phenotype_table"].index.name == "guide_target"
    regr = tables["regr_fits_final"]
    assert regr.index.name == "name"
    assert regr.index.str.contains("_").all()
    assert "dcor" in regr.columns


def test_perturbench_subsets():
    full = datasets.perturbench_devel()
    parts = {s: datasets.perturbench_devel(subset=s) for s in ("norman19", "mcfaline23")}
    for subset, part in parts.items():
        assert not part.is_view
        assert (part.obs["dataset"] == subset).all()
        assert part.n_vars == full.n_vars
    assert parts["norman19"].n_obs == 3375
    assert parts["norman19"].n_obs + parts["mcfaline23"].n_obs == full.n_obs
    assert list(datasets.norman2019_perturbench().obs_names) == list(parts["norman19"].obs_names)


def test_perturbench_bad_subset():
    with pytest.raises(ValueError, match="allowed values") as excinfo:
        datasets.perturbench_devel(subset="replogle22")
    assert "norman19" in str(excinfo.value)
    assert "mcfaline23" in str(excinfo.value)


def test_data_path_verifies_and_logs(caplog):
    with caplog.at_level(logging.INFO, logger="biojepa.datasets"):
        path = datasets.data_path(SMALL_NO_URL)
    assert path.is_file()
    assert _load.sha256sum(path) == _registry.REGISTRY[SMALL_NO_URL].sha256
    assert str(path) in caplog.text
    with pytest.raises(ValueError, match="registered files"):
        datasets.data_path("no_such_file.h5ad")


def test_registry_is_frozen_and_matches_sha256sums(real):
    with pytest.raises(TypeError):
        _registry.REGISTRY["x"] = _registry.REGISTRY[SMALL_NO_URL]  # type: ignore[index]
    with pytest.raises(FrozenInstanceError):
        _registry.REGISTRY[SMALL_NO_URL].url = "https://example.org"  # type: ignore[misc]
    assert [name for name, e in _registry.REGISTRY.items() if e.url] == [PERTURBENCH]
    sums = real[SMALL_NO_URL].parent / "SHA256SUMS"
    if not sums.is_file():
        pytest.skip("no SHA256SUMS next to the data")
    expected = dict(reversed(line.split()) for line in sums.read_text().splitlines() if line.strip())
    assert {name: e.sha256 for name, e in _registry.REGISTRY.items()} == expected


def test_default_search_dirs(tmp_path, monkeypatch):
    monkeypatch.delenv("BIOJEPA_DATA_DIR", raising=False)
    cwd = tmp_path / "project" / "sub"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    dirs = _load.search_dirs()
    root = next(p for p in Path(_load.__file__).resolve().parents if (p / "pyproject.toml").is_file())
    assert dirs[0] == root.parent / "shared" / "data"
    assert cwd.resolve().parent / "shared" / "data" in dirs
    assert tmp_path.resolve() / "shared" / "data" in dirs


def test_data_dir_argument_overrides_env(tmp_path, empty_data_dir, real):
    shutil.copy(real[SMALL_NO_URL], tmp_path / SMALL_NO_URL)
    assert datasets.guo2010_mouse_embryo(data_dir=tmp_path).n_obs == 428
    assert _load.search_dirs(tmp_path) == [tmp_path]


def test_missing_file_without_url(empty_data_dir):
    with pytest.raises(FileNotFoundError, match="BIOJEPA_DATA_DIR") as excinfo:
        datasets.guo2010_mouse_embryo()
    assert SMALL_NO_URL in str(excinfo.value)
    assert str(empty_data_dir) in str(excinfo.value)


def test_corrupted_file(tmp_path, monkeypatch, real):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    data = bytearray(real[SMALL_NO_URL].read_bytes())
    data[1000:1010] = bytes(b ^ 0xFF for b in data[1000:1010])
    (corrupt / SMALL_NO_URL).write_bytes(bytes(data))
    monkeypatch.setenv("BIOJEPA_DATA_DIR", str(corrupt))
    with pytest.raises(ValueError, match="Checksum mismatch") as excinfo:
        datasets.guo2010_mouse_embryo()
    assert _registry.REGISTRY[SMALL_NO_URL].sha256 in str(excinfo.value)


def test_download_fallback(tmp_path, empty_data_dir, monkeypatch, caplog, real):
    _with_url(monkeypatch, PERTURBENCH, real[PERTURBENCH].as_uri())
    with caplog.at_level(logging.INFO, logger="biojepa.datasets"):
        adata = datasets.perturbench_devel(subset="mcfaline23")
    assert adata.n_obs == 2586
    cached = tmp_path / "cache" / PERTURBENCH
    assert _load.sha256sum(cached) == _registry.REGISTRY[PERTURBENCH].sha256
    assert "Fetching" in caplog.text
    assert str(cached) in caplog.text
    assert sorted(p.name for p in cached.parent.iterdir()) == [PERTURBENCH]
    # the second call uses the verified cache and never touches the network
    monkeypatch.setattr(_load, "_copy_file", lambda *a, **k: pytest.fail("downloaded again"))
    assert datasets.data_path(PERTURBENCH) == cached


def test_download_checksum_mismatch(tmp_path, empty_data_dir, monkeypatch, real):
    _with_url(monkeypatch, PERTURBENCH, real[SMALL_NO_URL].as_uri())
    with pytest.raises(ValueError, match="Checksum mismatch") as excinfo:
        datasets.perturbench_devel()
    assert _registry.REGISTRY[PERTURBENCH].sha256 in str(excinfo.value)
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.rglob("*"))


def test_download_failure(tmp_path, empty_data_dir, monkeypatch):
    url = (tmp_path / "nowhere.h5ad").as_uri()
    _with_url(monkeypatch, PERTURBENCH, url)
    with pytest.raises(FileNotFoundError, match="BIOJEPA_DATA_DIR") as excinfo:
        datasets.perturbench_devel()
    assert url in str(excinfo.value)


def test_gene_priors_match_their_readme(real):
    readme = real[SMALL_NO_URL].parent / "gene_priors" / "README.md"
    if not readme.is_file():
        pytest.skip("no gene_priors/README.md next to the data")
    recorded = re.findall(r"sha256: `([0-9a-f]{64})`", readme.read_text())
    assert [e.sha256 for e in _registry.GENE_PRIORS.values()] == recorded
    assert not set(_registry.GENE_PRIORS) & set(_registry.REGISTRY)  # kept out of SHA256SUMS' registry
    path = datasets.data_path(_registry.GO_TABLE)  # verified like a registered file
    assert _load.sha256sum(path) == _registry.GENE_PRIORS[_registry.GO_TABLE].sha256
