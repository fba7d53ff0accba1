"""Every public function and class, and every method the model defines, has an ``Examples`` section (a doctest)."""

from __future__ import annotations

import inspect

import pytest

import biojepa as bj

MODULES = [
    bj,
    bj.data,
    bj.nn,
    bj.pl,
    bj.tl,
    bj.tune,
    bj.metrics,
    bj.baselines,
    bj.datasets,
    bj.train,
    bj.module,
    bj.masks,
]


def _public():
    for module in MODULES:
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                yield pytest.param(obj, id=f"{module.__name__}.{name}")


def _model_methods():
    for name in dir(bj.BioJEPA):
        owner = next((k for k in bj.BioJEPA.__mro__ if name in vars(k)), None)
        if not name.startswith("_") and owner.__module__.startswith("biojepa"):
            yield pytest.param(getattr(bj.BioJEPA, name), id=f"BioJEPA.{name}")


@pytest.mark.parametrize("obj", [*_public(), *_model_methods()])
def test_has_examples(obj):
    doc = inspect.getdoc(obj) or ""
    assert "\nExamples\n--------\n" in doc and ">>> " in doc.split("\nExamples\n--------\n", 1)[1]
