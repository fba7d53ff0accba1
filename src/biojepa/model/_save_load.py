"""``save`` and ``load`` of :class:`~biojepa.BioJEPA`: tensors plus JSON, nothing unpickled, rank-0 writes."""

from __future__ import annotations

import json
import logging
import os
import pickle
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import anndata
import mudata
import numpy as np
import scvi
import torch
import torch.distributed as dist
from anndata import AnnData
from mudata import MuData
from scvi.model.base._save_load import _get_var_names, _initialize_model

from ._serialization import FORMAT_VERSION, LEGACY_FORMAT_VERSION, decode, encode, restricted_pickle

logger = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
META_FILE = "model.json"
ADATA_FILE = "adata.h5ad"
MDATA_FILE = "mdata.h5mu"


def _package_version() -> str:
    try:
        return version("biojepa")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _read_current(model_path: Path, meta_path: Path, map_location) -> tuple[dict, object, dict]:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"Cannot read model file {meta_path}: {err}. The file is damaged; save the model again."
        ) from err
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{meta_path} has model format version {version!r}, written by biojepa {meta.get('biojepa_version')}; "
            f"this biojepa ({_package_version()}) reads versions up to {FORMAT_VERSION}: upgrade biojepa to load it."
        )
    try:
        weights = torch.load(model_path, map_location=map_location, weights_only=True)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"Model weights {model_path} are missing next to {meta_path}.") from err
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as err:
        raise ValueError(
            f"Refusing to load {model_path}: it is not a tensor-only biojepa weights file ({err})."
        ) from err
    if not isinstance(weights, dict) or "model_state_dict" not in weights:
        raise ValueError(f"{model_path} holds no `model_state_dict`; it is not a biojepa weights file.")
    return decode(meta["attr_dict"]), decode(meta["var_names"]), weights["model_state_dict"]


#: module buffers that folders of earlier releases may lack: they keep the values the module starts with
_ADDED_BUFFERS = (
    "condition_holdout",
    "interaction_scale",
    "novelty_scale",
    "perturbation.dose_center",
    "pair_holdout",
    "context_transfer",
)
#: buffers whose length is the data's (held-out pairs): the saved one replaces the module's before loading
_SIZED_BUFFERS = ("pair_holdout",)
#: weights of earlier releases that the module no longer has (the dose term of perturbation tokens, replaced by
#: the dose-response)
_REMOVED_WEIGHTS = ("perturbation.dose.weight",)


def _read_legacy(model_path: Path, map_location) -> tuple[dict, object, dict]:
    """A folder written by release 0.1.0: one pickled ``model.pt``, read with the restricted unpickler."""
    try:
        saved = torch.load(model_path, map_location=map_location, weights_only=False, pickle_module=restricted_pickle)
    except pickle.UnpicklingError as err:
        raise ValueError(f"Refusing to load {model_path}: {err}. Only files saved by biojepa are read.") from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, UnicodeDecodeError, ValueError) as err:
        raise ValueError(
            f"Cannot read model file {model_path}: {err}. The file is damaged; save the model again."
        ) from err
    if not isinstance(saved, dict) or "attr_dict" not in saved:
        raise ValueError(f"{model_path} is not a biojepa model file (no `attr_dict`).")
    state = saved["model_state_dict"]
    state.pop("pyro_param_store", None)
    return saved["attr_dict"], saved["var_names"], state


def read_model_folder(dir_path: str, prefix: str | None = None, map_location=None) -> tuple[dict, object, dict, int]:
    """Attributes, variable names, weights and format version of a saved model folder."""
    folder = Path(dir_path)
    if not folder.is_dir():
        raise FileNotFoundError(f"No saved model at {folder}: the folder does not exist (save it with `model.save`).")
    prefix = prefix or ""
    model_path, meta_path = folder / f"{prefix}{MODEL_FILE}", folder / f"{prefix}{META_FILE}"
    if meta_path.is_file():
        return (*_read_current(model_path, meta_path, map_location), FORMAT_VERSION)
    if model_path.is_file():
        return (*_read_legacy(model_path, map_location), LEGACY_FORMAT_VERSION)
    raise FileNotFoundError(f"No saved model in {folder}: neither {meta_path.name} nor {model_path.name} is there.")


def _check_var_names(adata, saved) -> None:
    """Raise unless ``adata`` has the saved genes in the saved order."""
    current = _get_var_names(adata, legacy_mudata_format=not isinstance(saved, dict) and isinstance(adata, MuData))
    pairs = saved.items() if isinstance(saved, dict) else [(None, saved)]
    for mod, names in pairs:
        have = current.get(mod) if isinstance(current, dict) else current
        where = "adata.var_names" if mod is None else f"mdata[{mod!r}].var_names"
        if have is None:
            raise ValueError(f"The data has no modality {mod!r}, which the saved model was trained on.")
        names = np.asarray(names).astype(str)
        have = np.asarray(have).astype(str)
        if np.array_equal(names, have):
            continue
        missing = np.setdiff1d(names, have)
        if len(missing):
            raise ValueError(
                f"{where} lacks {len(missing)} of the model's {len(names)} genes (e.g. {missing[:5].tolist()}); "
                "map new data with `BioJEPA.prepare_query_anndata(adata, model_path)` first."
            )
        raise ValueError(
            f"{where} has the model's genes in another order or with extra genes ({len(have)} vs {len(names)}); "
            "reorder them with `adata = adata[:, genes].copy()` where `genes` are the model's genes "
            "(or use `BioJEPA.prepare_query_anndata`)."
        )


class SaveLoadMixin:
    """Safe, versioned model folders; saving from every rank or from rank 0 only."""

    def save(
        self,
        dir_path: str,
        prefix: str | None = None,
        overwrite: bool = False,
        save_anndata: bool = False,
        **anndata_write_kwargs,
    ) -> None:
        """Save the model to a folder: weights in ``model.pt``, everything else (with versions) in ``model.json``.

        Loading never unpickles objects (see :meth:`load`). Under DDP only rank 0 writes and the other ranks return
        at once, so both ``model.save(path)`` on every rank and ``if trainer.is_global_zero: model.save(path)`` work;
        no collective call is made. To read the folder on every rank afterwards, synchronize first (e.g.
        ``torch.distributed.barrier()``).

        Parameters
        ----------
        dir_path
            Folder to write; created if needed.
        prefix
            Prefix of the file names.
        overwrite
            Replace the files of an existing folder; otherwise an existing folder raises.
        save_anndata
            Also write the AnnData (``adata.h5ad``) or MuData (``mdata.h5mu``).
        **anndata_write_kwargs
            Passed to :meth:`anndata.AnnData.write_h5ad`.

        Examples
        --------
        >>> import os, tempfile, scvi, biojepa as bj
        >>> adata = scvi.data.synthetic_iid()
        >>> bj.BioJEPA.setup_anndata(adata)
        >>> model = bj.BioJEPA(adata, n_latent=8)
        >>> model.train(max_epochs=1, enable_progress_bar=False)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     model.save(d, overwrite=True)
        ...     sorted(os.listdir(d))
        ['model.json', 'model.pt']
        """
        if _rank() != 0:
            return
        folder = Path(dir_path)
        if folder.exists() and not overwrite:
            raise ValueError(f"{folder} already exists; pass `overwrite=True` or another folder.")
        prefix = prefix or ""
        attrs = {name: value for name, value in self._get_user_attributes() if name.endswith("_")}
        meta = {
            "format": "biojepa",
            "format_version": FORMAT_VERSION,
            "biojepa_version": _package_version(),
            "scvi_tools_version": scvi.__version__,
            "torch_version": torch.__version__,
            "model_class": type(self).__name__,
            "var_names": encode(self.get_var_names(), "var_names"),
            "attr_dict": {name: encode(value, name) for name, value in attrs.items()},
        }
        folder.mkdir(parents=True, exist_ok=True)
        if save_anndata:
            name = MDATA_FILE if isinstance(self.adata, MuData) else ADATA_FILE
            self.adata.write(folder / f"{prefix}{name}", **anndata_write_kwargs)
        state = {k: v.detach().cpu() for k, v in self.module.state_dict().items()}
        tmp = folder / f".{prefix}{META_FILE}.part"
        tmp.write_text(json.dumps(meta))
        torch.save({"model_state_dict": state}, folder / f"{prefix}{MODEL_FILE}")
        os.replace(tmp, folder / f"{prefix}{META_FILE}")

    @classmethod
    def load(
        cls,
        dir_path: str,
        adata: AnnData | MuData | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        prefix: str | None = None,
    ):
        """Load a model saved by :meth:`save` (also by biojepa 0.1.0) without unpickling any object.

        Weights are read with ``torch.load(weights_only=True)`` and the other attributes from JSON; folders
        written by biojepa 0.1.0 are read by an unpickler that builds only numpy, pandas and torch types, so a
        crafted file raises instead of running code.

        Parameters
        ----------
        dir_path
            Folder written by :meth:`save`.
        adata
            Data with the model's genes in the model's order (set up automatically from the saved setup);
            ``None`` reads the data saved with ``save_anndata=True``.
        accelerator, device
            Where to put the model (see :class:`lightning.pytorch.Trainer`).
        prefix
            Prefix of the file names.

        Returns
        -------
        The model, in eval mode.

        Examples
        --------
        >>> import tempfile, numpy as np, scvi, biojepa as bj
        >>> adata = scvi.data.synthetic_iid()
        >>> bj.BioJEPA.setup_anndata(adata)
        >>> model = bj.BioJEPA(adata, n_latent=8)
        >>> model.train(max_epochs=1, enable_progress_bar=False)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     model.save(d, overwrite=True)
        ...     loaded = bj.BioJEPA.load(d, adata=adata)
        >>> np.allclose(loaded.get_latent_representation(), model.get_latent_representation(), atol=1e-6)
        True
        """
        from scvi.model._utils import parse_device_args

        _, _, torch_device = parse_device_args(
            accelerator=accelerator, devices=device, return_device="torch", validate_single_device=True
        )
        attr_dict, var_names, state, version = read_model_folder(dir_path, prefix, map_location=torch_device)
        registry = attr_dict.pop("registry_")
        if registry.get("model_name", cls.__name__) != cls.__name__:
            raise ValueError(f"{dir_path} holds a {registry['model_name']} model, not a {cls.__name__}.")
        if adata is None:
            adata = _saved_data(Path(dir_path), prefix or "", registry)
        _check_var_names(adata, var_names)
        method = registry.get("setup_method_name", "setup_anndata")
        getattr(cls, method)(adata, source_registry=registry, **registry["setup_args"])
        _keep_earlier_defaults(attr_dict.get("init_params_", {}))
        _readout_as_saved(attr_dict.get("init_params_", {}), state)
        model = _initialize_model(cls, adata, registry, attr_dict, None)
        own = model.module.state_dict()
        state = {**{k: v for k, v in own.items() if k in _ADDED_BUFFERS}, **state}
        removed = [k for k in _REMOVED_WEIGHTS if k in state and k not in own]
        if removed:
            logger.warning(
                "%s was saved by an earlier biojepa whose dose term (%s) this release replaces by a learned "
                "dose-response; predictions at other doses than 1 need the model trained again.",
                dir_path,
                ", ".join(removed),
            )
            state = {k: v for k, v in state.items() if k not in removed}
        for key in _SIZED_BUFFERS:
            if key in state and key in own and state[key].shape != own[key].shape:
                setattr(model.module, key, state[key].clone())
        model.module.load_state_dict(state)
        model.to_device(torch_device)
        model.module.eval()
        model._validate_anndata(adata)
        return model


#: Arguments whose default changed, with the value a model saved before the argument existed was trained with.
_EARLIER_DEFAULTS = {"readout_weight": 0.0, "readout_genes": None}


def _keep_earlier_defaults(init_params: dict) -> None:
    """Give a saved model the settings it was trained with where the argument postdates it (in place).

    Examples
    --------
    >>> params = {"kwargs": {}, "non_kwargs": {"n_latent": 4}}
    >>> _keep_earlier_defaults(params)
    >>> params["non_kwargs"]["readout_weight"]  # saved before the readout existed: none, as trained
    0.0
    """
    saved = init_params.setdefault("non_kwargs", {})
    for name, value in _EARLIER_DEFAULTS.items():
        if name not in saved and name not in init_params.get("kwargs", {}):
            saved[name] = value


def _readout_as_saved(init_params: dict, state: dict) -> None:
    """No readout for a model saved without one (in place): its weights are the record of how it was trained.

    The default readout depends on the data (:func:`biojepa.model._readout.resolve_readout`) and has changed with
    releases (log-scale input had none before ``"mse_log"``), so a saved default is resolved from the state.

    Examples
    --------
    >>> params = {"kwargs": {}, "non_kwargs": {"readout_weight": None}}
    >>> _readout_as_saved(params, {"gene_mean": None})
    >>> params["non_kwargs"]["readout_weight"]
    0.0
    >>> params = {"kwargs": {}, "non_kwargs": {"readout_weight": None}}
    >>> _readout_as_saved(params, {"readout.net.0.weight": None})
    >>> params["non_kwargs"]["readout_weight"] is None  # trained with a readout: resolved as before
    True
    """
    if not any(key.startswith("readout.") for key in state):
        init_params.setdefault("non_kwargs", {})["readout_weight"] = 0.0
        init_params.get("kwargs", {}).pop("readout_weight", None)


def _saved_data(folder: Path, prefix: str, registry: dict):
    is_mudata = registry.get("setup_method_name") == "setup_mudata"
    path = folder / f"{prefix}{MDATA_FILE if is_mudata else ADATA_FILE}"
    if not path.is_file():
        raise ValueError(f"No data saved in {folder} (no {path.name}); pass `adata=` with the model's genes.")
    return mudata.read_h5mu(path) if is_mudata else anndata.read_h5ad(path)
