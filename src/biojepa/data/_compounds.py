"""Compound features from structure: Morgan fingerprints computed by RDKit (the ``chem`` extra)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

__all__ = ["compound_features"]


def _rdkit():
    try:
        from rdkit import Chem, RDLogger
        from rdkit.Chem import rdFingerprintGenerator
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError("`compound_features` needs RDKit, an optional extra: `pip install 'biojepa[chem]'`.") from err
    RDLogger.DisableLog("rdApp.*")  # parse failures are reported below, by name
    return Chem, rdFingerprintGenerator


def compound_features(
    smiles: Mapping[str, str] | pd.Series, radius: int = 2, n_bits: int = 1024, counts: bool = False
) -> pd.DataFrame:
    """Morgan (ECFP-like) fingerprints of compounds, as a feature table for ``perturbation_features``.

    Parameters
    ----------
    smiles
        Compound name → SMILES string (a dict or a Series indexed by name).
    radius
        Morgan radius (2 gives ECFP4-like bits).
    n_bits
        Fingerprint length.
    counts
        Count fingerprints (how often each substructure occurs) instead of bits.

    Returns
    -------
    DataFrame indexed by compound name, ``n_bits`` float32 columns ``morgan0`` ...

    Raises
    ------
    ImportError
        Without RDKit (``pip install 'biojepa[chem]'``).
    ValueError
        Naming every SMILES that does not parse.

    Examples
    --------
    >>> import biojepa as bj
    >>> table = bj.data.compound_features({"aspirin": "CC(=O)OC1=CC=CC=C1C(=O)O", "ethanol": "CCO"}, n_bits=64)
    >>> table.shape, int(table.loc["ethanol"].sum()) > 0
    ((2, 64), True)
    """
    Chem, generators = _rdkit()
    items = list(smiles.items())
    if not items:
        raise ValueError("`smiles` is empty; pass {compound name: SMILES}.")
    if radius < 0 or n_bits < 1:
        raise ValueError(f"`radius` must be >= 0 and `n_bits` >= 1, got radius={radius}, n_bits={n_bits}.")
    generator = generators.GetMorganGenerator(radius=radius, fpSize=n_bits)
    rows, bad = [], []
    for name, text in items:
        mol = Chem.MolFromSmiles(str(text)) if isinstance(text, str) and text.strip() else None
        if mol is None:
            bad.append(f"{name}: {text!r}")
            continue
        fp = generator.GetCountFingerprintAsNumPy(mol) if counts else generator.GetFingerprintAsNumPy(mol)
        rows.append(np.asarray(fp, dtype=np.float32))
    if bad:
        raise ValueError(f"{len(bad)} SMILES do not parse: {bad[:5]}; fix or drop them.")
    names = [str(name) for name, _ in items]
    return pd.DataFrame(np.vstack(rows), index=names, columns=[f"morgan{i}" for i in range(n_bits)])
