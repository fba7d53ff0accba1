"""Safe model files: attributes as tagged JSON, weights through ``torch.load(weights_only=True)``.

Nothing read from a model folder is unpickled into arbitrary objects. The current format keeps the tensors in
``model.pt`` (loaded with ``weights_only=True``) and every other attribute in ``model.json``, where numpy arrays,
pandas frames, tuples and the package's own dataclasses are written as tagged JSON. Files written by release 0.1.0
(one pickled ``model.pt``) are read by an unpickler that only builds an allowlist of numpy, pandas and torch types.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import pickle
import types
from typing import Any

import numpy as np
import pandas as pd

#: Version of the model folder layout written by :meth:`~biojepa.BioJEPA.save`.
FORMAT_VERSION = 2
#: Format of folders written by release 0.1.0 (a single pickled ``model.pt``).
LEGACY_FORMAT_VERSION = 1

_TAG = "__biojepa__"
_PACKAGE = "biojepa."


def encode(obj: Any, where: str = "attribute") -> Any:
    """JSON-ready copy of ``obj``; raise a ``TypeError`` naming ``where`` for a type that cannot be written safely.

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.model._serialization import decode, encode
    >>> enc = encode({"a": np.array([1, 2]), "b": (0.5, "x")})
    >>> dec = decode(enc)
    >>> dec["a"].tolist(), dec["b"]
    ([1, 2], (0.5, 'x'))
    """
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int | float):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        items = [encode(x, where) for x in obj.ravel().tolist()] if obj.dtype == object else obj.ravel().tolist()
        dtype = "object" if obj.dtype == object else obj.dtype.str
        return {_TAG: "ndarray", "dtype": dtype, "shape": list(obj.shape), "data": items}
    if isinstance(obj, pd.DataFrame):
        return {
            _TAG: "dataframe",
            "columns": encode(obj.columns.to_numpy(), where),
            "index": encode(obj.index.to_numpy(), where),
            "index_name": encode(obj.index.name, where),
            "data": {str(i): encode(obj.iloc[:, i].to_numpy(), where) for i in range(obj.shape[1])},
        }
    if isinstance(obj, pd.Series | pd.Index):
        return encode(obj.to_numpy(), where)
    if isinstance(obj, tuple):
        return {_TAG: "tuple", "items": [encode(x, where) for x in obj]}
    if isinstance(obj, list):
        return [encode(x, where) for x in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and _TAG not in obj:
            return {k: encode(v, f"{where}[{k!r}]") for k, v in obj.items()}
        return {_TAG: "dict", "items": [[encode(k, where), encode(v, where)] for k, v in obj.items()]}
    cls = type(obj)
    if dataclasses.is_dataclass(obj) and cls.__module__.startswith(_PACKAGE):
        fields = {f.name: encode(getattr(obj, f.name), f"{where}.{f.name}") for f in dataclasses.fields(obj)}
        return {_TAG: "dataclass", "class": f"{cls.__module__}.{cls.__qualname__}", "fields": fields}
    raise TypeError(
        f"Cannot save {where} of type {cls.__module__}.{cls.__qualname__}: model attributes must be numbers, "
        "strings, lists, dicts, numpy arrays, pandas frames or biojepa dataclasses."
    )


def _package_dataclass(path: str):
    module, _, name = path.rpartition(".")
    if not (module + ".").startswith(_PACKAGE):
        raise ValueError(f"Refusing to build {path!r}: only biojepa dataclasses are read from model files.")
    cls = getattr(importlib.import_module(module), name, None)
    if cls is None or not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise ValueError(f"{path!r} is not a biojepa dataclass; the model file is damaged or from another version.")
    return cls


def decode(obj: Any) -> Any:
    """Inverse of :func:`encode`.

    Examples
    --------
    >>> from biojepa.model._serialization import decode
    >>> decode({"__biojepa__": "tuple", "items": [1, 2]})
    (1, 2)
    """
    if isinstance(obj, list):
        return [decode(x) for x in obj]
    if not isinstance(obj, dict):
        return obj
    tag = obj.get(_TAG)
    if tag is None:
        return {k: decode(v) for k, v in obj.items()}
    if tag == "ndarray":
        if obj["dtype"] != "object":
            return np.asarray(obj["data"], dtype=np.dtype(obj["dtype"])).reshape(obj["shape"])
        out = np.empty(len(obj["data"]), dtype=object)
        for i, x in enumerate(obj["data"]):
            out[i] = decode(x)
        return out.reshape(obj["shape"])
    if tag == "dataframe":
        columns = decode(obj["columns"])
        data = {columns[int(i)]: decode(v) for i, v in obj["data"].items()}
        index = pd.Index(decode(obj["index"]), name=decode(obj["index_name"]))
        return pd.DataFrame(data, index=index, columns=columns)
    if tag == "tuple":
        return tuple(decode(x) for x in obj["items"])
    if tag == "dict":
        return {_hashable(decode(k)): decode(v) for k, v in obj["items"]}
    if tag == "dataclass":
        cls = _package_dataclass(obj["class"])
        return cls(**{k: decode(v) for k, v in obj["fields"].items()})
    raise ValueError(f"Unknown tag {tag!r} in the model file; it was written by a newer biojepa, upgrade to read it.")


def _hashable(key):
    return tuple(key) if isinstance(key, list) else key


# ---------------------------------------------------------------------------------------------- release 0.1.0 files
_LEGACY_ALLOWED = {
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("builtins", "bytes"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "set"),
    ("builtins", "slice"),
    ("builtins", "tuple"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch", "Size"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("pandas.core.frame", "DataFrame"),
    ("pandas.core.series", "Series"),
    ("pandas.core.internals.managers", "BlockManager"),
    ("pandas.core.internals.managers", "SingleBlockManager"),
    ("pandas._libs.internals", "_unpickle_block"),
    ("pandas.core.indexes.base", "_new_Index"),
    ("pandas.core.indexes.base", "Index"),
    ("pandas.core.indexes.range", "RangeIndex"),
}
#: classes of 0.1.0 folders that later releases no longer have: read as plain records of their attributes
_LEGACY_RECORDS = {("biojepa.data._perturbation", "PerturbationTables")}


class _LegacyRecord:
    """Attributes of an object of a 0.1.0 class that no longer exists (its lookups are rebuilt from the registry)."""


_PY2_MODULES = {"__builtin__": "builtins"}  # protocol-2 pickles name builtins by their Python 2 module
_LEGACY_MODULE_PREFIXES = ("numpy.dtypes",)  # numpy's dtype classes (Float32DType, ObjectDType, ...)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that builds only allowlisted classes and functions (see the :mod:`pickle` docs)."""

    def find_class(self, module: str, name: str):
        module = _PY2_MODULES.get(module, module)
        if (module, name) in _LEGACY_RECORDS:
            return _LegacyRecord
        if (module, name) in _LEGACY_ALLOWED or module in _LEGACY_MODULE_PREFIXES:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a biojepa model file")


#: ``pickle_module`` for :func:`torch.load` that unpickles only the allowlisted types.
restricted_pickle = types.SimpleNamespace(
    Unpickler=_RestrictedUnpickler,
    load=lambda f, **kw: _RestrictedUnpickler(f, **kw).load(),
    loads=lambda b, **kw: _RestrictedUnpickler(io.BytesIO(b), **kw).load(),
    __name__="biojepa_restricted_pickle",
)
