"""State runner (environment of ``setup_state.sh``): Arc Institute's State Transition model (ST) on our split.

ST maps a *set* of control cells plus a perturbation encoding to the set of perturbed cells (a transformer over
the cells of the set, trained with an energy distance between predicted and observed sets). The runner drives the
package's own entry points in-process: ``state tx train`` (its Hydra configuration, composed with the package's
``load_hydra_config``) and ``state tx infer``.

Data: the canonical AnnData is written as one training ``.h5ad`` (listed under ``[training]`` of the TOML data
configuration, no validation or test split): ``obs["condition"]`` is the perturbation column (control label
``"control"``), ``obs["cell_type"]`` the cell-type column, a constant batch column, and the log-normalized
expression both in ``X`` and in ``obsm["X_hvg"]`` (the layout ``state tx preprocess_train`` writes; every one of the
benchmark's genes counts as a highly variable gene), trained with ``embed_key=X_hvg`` as in the package README's
training command and ``output_space=gene`` (the data default ``all`` would only add a second decoder onto the same
genes, since ``X_hvg`` holds them all). Control cells are paired with perturbed cells at random within the cell type
(``basal_mapping_strategy=random``, the default); ST takes no cell-type input besides its set of control cells.

Perturbations: ST's default perturbation representation is a one-hot vector per perturbation *label*
(``pert_rep=onehot``); a cell carries exactly one label. A combination ``"A+B"`` is therefore its own label, with a
one-hot of its own only if ``"A+B"`` itself was observed in training: an unseen combination (even of seen genes) and
an unseen single gene have no trained encoding and are skipped (no prediction, reported as not applicable), as CPA
skips genes it never saw. On the benchmark's runs this leaves ST the requests whose label was observed in another
cell type (the McFaline cross-line split).

Model: ``model=state`` (the default of the package's ``config.yaml``, also the README's): a bidirectional 8-layer
LLaMA backbone, hidden size 768, 12 heads, one-layer encoders/decoders, energy loss, residual prediction. Training:
the README's ``training.batch_size=8`` and the defaults of ``training/default.yaml`` (lr 1e-4, weight decay 5e-4,
gradient clipping 10). What CPU and the tiny data change (see ``CELL_SET_LEN`` and the epoch budget below):

- ``cell_set_len`` 128 instead of 512: the benchmark's (perturbation, cell type) groups hold 80-400 cells, and ST
  fills a short group up to the set length by sampling its cells with replacement, so a set of 512 would mostly
  repeat cells (and cost 4x the compute per step on CPU). 128 is the package's ``state_sm`` setting;
- the step budget: ST trains for ``training.max_steps`` (the README's command: 40,000 steps of 8 sets of 512 cells),
  far beyond CPU time here. ``--epochs`` counts passes over the training sets as ST's sampler builds them (every
  (label, cell type) group, controls included, cut into sets of ``cell_set_len`` cells, 8 sets a step), and
  ``max_steps = epochs x steps per epoch``. The default of 20 epochs (140 steps on the ``perturbench`` run, about
  10 s a step on one CPU thread) is a CPU budget, not State's default;
- ``num_workers=0`` and no Weights & Biases logging; validation is never run (no validation split: ST's default
  trains for a fixed number of steps, and the final checkpoint is used).

Prediction (``state tx infer`` on the training control cells of the request's cell type, each copied and labelled with
the request): ST replaces each labelled cell by a control cell of the same cell type drawn at random, predicts the
perturbed set window by window (``cell_set_len`` cells a window), and clips to [0, 14] as ``infer`` does; the
request's prediction is the mean of its predicted cells. ``cost`` times ``run_tx_train`` (data set-up, fitting and
writing the final checkpoint); the run directory (two checkpoints of about 1 GB) is removed afterwards.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from _adapter import CONTROL, COV, KEY, write_prediction
from _runner import Timer, cost, parse_args, seed_everything

BATCH = "batch"
CELL_SET_LEN = 128
BATCH_SIZE = 8


def steps_per_epoch(obs: pd.DataFrame, cell_set_len: int, batch_size: int) -> int:
    """Training steps of one pass over ST's training sets: each (label, cell type) group cut into sets."""
    sizes = obs.groupby([KEY, COV], observed=True).size()
    n_sets = int(sum(math.ceil(n / cell_set_len) for n in sizes))
    return max(1, math.ceil(n_sets / batch_size))


def write_training(adata: ad.AnnData, path: Path) -> None:
    """The training file in the layout ``cell_load`` reads (categorical obs columns, ``obsm["X_hvg"]``)."""
    X = np.asarray(adata.X, dtype=np.float32)
    obs = pd.DataFrame(index=adata.obs_names.astype(str))
    obs[KEY] = pd.Categorical(adata.obs[KEY].astype(str))
    obs[COV] = pd.Categorical(adata.obs[COV].astype(str))
    obs[BATCH] = pd.Categorical(["0"] * adata.n_obs)
    var = pd.DataFrame({"gene_name": adata.var_names.astype(str)}, index=adata.var_names.astype(str))
    out = ad.AnnData(X=X, obs=obs, var=var)
    out.obsm["X_hvg"] = X.copy()
    out.write_h5ad(path)


def train(train_file: Path, work: Path, seed: int, max_steps: int) -> Path:
    """``state tx train`` with the configuration of the module docstring; returns the run directory."""
    from state.__main__ import load_hydra_config
    from state._cli import run_tx_train

    toml = work / "data.toml"
    toml.write_text(f'[datasets]\nbench = "{train_file}"\n\n[training]\nbench = "train"\n')
    overrides = [
        "model=state",
        f"model.kwargs.cell_set_len={CELL_SET_LEN}",
        "model.device=cpu",
        f"data.kwargs.toml_config_path={toml}",
        "data.kwargs.embed_key=X_hvg",
        "data.kwargs.output_space=gene",
        f"data.kwargs.pert_col={KEY}",
        f"data.kwargs.cell_type_key={COV}",
        f"data.kwargs.batch_col={BATCH}",
        f"data.kwargs.control_pert={CONTROL}",
        "data.kwargs.num_workers=0",
        "data.kwargs.pin_memory=false",
        f"+data.kwargs.random_seed={seed}",
        f"training.batch_size={BATCH_SIZE}",
        f"training.max_steps={max_steps}",
        f"training.train_seed={seed}",
        f"training.val_freq={max_steps + 1}",
        f"training.ckpt_every_n_steps={max_steps + 1}",
        "training.wandb_track=false",
        "use_wandb=false",
        f"output_dir={work}",
        "name=run",
    ]
    run_tx_train(load_hydra_config("tx", overrides))
    return work / "run"


def infer(run_dir: Path, adata: ad.AnnData, todo: list[tuple[str, str]], work: Path, seed: int) -> ad.AnnData:
    """``state tx infer`` on each request's training control cells labelled with the request."""
    from state._cli import run_tx_infer

    is_ctrl = (adata.obs[KEY] == CONTROL).to_numpy()
    parts = []
    for label, cell_type in todo:
        cells = adata[is_ctrl & (adata.obs[COV] == cell_type).to_numpy()]
        for name in (CONTROL, label):  # the controls are ST's pool of basal cells for this cell type
            obs = pd.DataFrame({KEY: name, "group": f"{label}|{cell_type}"}, index=cells.obs_names)
            obs.index = [f"{n}|{label}|{name}" for n in cells.obs_names]
            parts.append(ad.AnnData(X=np.asarray(cells.X, dtype=np.float32), obs=obs))
    query = ad.concat(parts)
    query.obsm["X_hvg"] = np.asarray(query.X, dtype=np.float32).copy()
    query.var_names = adata.var_names.astype(str)
    src, dst = work / "infer_input.h5ad", work / "infer_output.h5ad"
    query.write_h5ad(src)
    args = argparse.Namespace(
        checkpoint=str(run_dir / "checkpoints" / "final.ckpt"), adata=str(src), embed_key="X_hvg", pert_col=KEY,
        output=str(dst), model_dir=str(run_dir), celltype_col="group", celltypes=None, batch_col=BATCH,
        control_pert=CONTROL, seed=seed, max_set_len=None, quiet=True, tsv=None, all_perts=False,
        virtual_cells_per_pert=None, min_cells=None, max_cells=None,
    )  # fmt: skip
    run_tx_infer(args)
    return ad.read_h5ad(dst)


def main() -> None:
    args = parse_args(__doc__, default_epochs=20)
    seed_everything(args.seed)
    adata = ad.read_h5ad(args.input)
    requests = adata.uns.pop("requests")
    adata.obs[KEY] = adata.obs[KEY].astype(str)
    adata.obs[COV] = adata.obs[COV].astype(str)
    seen = set(adata.obs[KEY])
    controls = set(adata.obs.loc[adata.obs[KEY] == CONTROL, COV])
    todo = [(c, t) for c, t in requests[[KEY, COV]].itertuples(index=False, name=None) if c in seen and t in controls]
    labels, types, rows, spent = [], [], [], {}
    if todo:
        work = Path(tempfile.mkdtemp(prefix="state_", dir=Path(args.output).resolve().parent))
        train_file = work / "train.h5ad"
        write_training(adata, train_file)
        per_epoch = steps_per_epoch(adata.obs, CELL_SET_LEN, BATCH_SIZE)
        max_steps = max(1, args.epochs * per_epoch)
        cwd = os.getcwd()
        os.chdir(work)  # Lightning and Hydra write next to the working directory
        try:
            with Timer() as t:
                run_dir = train(train_file, work, args.seed, max_steps)
            spent = cost(t.seconds, max_steps / per_epoch, adata.n_obs)
            pred = infer(run_dir, adata, todo, work, args.seed)
        finally:
            os.chdir(cwd)
            shutil.rmtree(work, ignore_errors=True)
        X = np.asarray(pred.obsm["X_hvg"], dtype=np.float64)
        obs = pred.obs
        for label, cell_type in todo:
            mask = ((obs[KEY].astype(str) == label) & (obs["group"].astype(str) == f"{label}|{cell_type}")).to_numpy()
            labels.append(label)
            types.append(cell_type)
            rows.append(X[mask].mean(0))
    X = np.vstack(rows) if rows else np.zeros((0, adata.n_vars))
    write_prediction(args.output, labels, types, X, adata.var_names, spent)


if __name__ == "__main__":
    main()
