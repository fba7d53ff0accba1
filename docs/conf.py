"""Sphinx configuration of the biojepa documentation.

Build with ``bash scripts/build_docs.sh`` (the one command used by CI and Read the Docs).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from datetime import datetime
from importlib.metadata import metadata
from pathlib import Path

import biojepa

# sphinx-autodoc-typehints calls a Sphinx API deprecated for Sphinx 10; not ours to fix, so keep it out of the log.
warnings.filterwarnings("ignore", message=r".*_RstSnippetParser\.set_application.*", category=DeprecationWarning)

# -- Project information ---------------------------------------------------------------------------------------

_info = metadata("biojepa")
project = _info["Name"]
author = "biojepa developers"
copyright = f"{datetime.now():%Y}, {author}"
version = _info["Version"]
release = version

# -- General configuration -------------------------------------------------------------------------------------

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # must come before sphinx_autodoc_typehints
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx_autodoc_typehints",
    "sphinxcontrib.bibtex",
]

templates_path = ["_templates"]
html_static_path = ["_static"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]

# Markdown (MyST) and notebooks (myst-nb); myst-nb registers ``.md`` and ``.ipynb`` itself.
myst_enable_extensions = ["colon_fence", "dollarmath", "amsmath", "deflist", "html_image"]
myst_heading_anchors = 3

# Notebooks are committed with their outputs and never executed by the docs build.
# To add a tutorial, put the notebook inside the source directory (suggested: ``docs/tutorials/<name>.ipynb``,
# Sphinx cannot include documents outside ``docs/``) and list it in the toctree of ``docs/tutorials.md``, e.g.
#     ```{toctree}
#     :maxdepth: 1
#
#     tutorials/quickstart
#     ```
nb_execution_mode = "off"
nb_merge_streams = True

# -- Autodoc / autosummary / napoleon ---------------------------------------------------------------------------

autosummary_generate = True
autosummary_imported_members = False
# Members the class template (_templates/autosummary/class.rst) never lists, besides inherited ones.
autosummary_context = {"skip_members": ["__init__", "training", "dump_patches", "call_super_init"]}


def _own_members(cls) -> list[str]:
    """Public members of ``cls`` defined in biojepa itself (by the class or one of its biojepa mixins)."""
    names = []
    for name in dir(cls):
        owner = next((k for k in cls.__mro__ if name in vars(k)), None)
        if not name.startswith("_") and owner is not None and owner.__module__.startswith("biojepa"):
            names.append(name)
    return names


# BioJEPA's methods live in mixins (perturbations, time courses, MuData, training), so autosummary counts them as
# inherited; the class template lists these instead.
autosummary_context["biojepa_members"] = {"biojepa.BioJEPA": _own_members(biojepa.BioJEPA)}
autodoc_member_order = "groupwise"
autodoc_typehints = "description"  # rendered by sphinx_autodoc_typehints
autoclass_content = "class"

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_include_init_with_doc = False
napoleon_use_rtype = True
napoleon_use_param = True

typehints_defaults = "braces"
always_document_param_types = False
typehints_document_rtype = True

# -- Bibliography ------------------------------------------------------------------------------------------------

bibtex_bibfiles = ["references.bib"]
bibtex_reference_style = "author_year"
bibtex_default_style = "alpha"

# -- Cross-references --------------------------------------------------------------------------------------------

# Missing targets are not warnings (docstrings mention many third-party objects).
nitpicky = False

# CI builds offline, so inventories are only fetched where ``BIOJEPA_DOCS_INTERSPHINX=1`` (Read the Docs).
if os.environ.get("BIOJEPA_DOCS_INTERSPHINX") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable/", None),
        "torch": ("https://docs.pytorch.org/docs/stable/", None),
        "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
        "mudata": ("https://mudata.readthedocs.io/en/latest/", None),
        "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
        "scvi-tools": ("https://docs.scvi-tools.org/en/stable/", None),
    }
else:
    intersphinx_mapping = {}
intersphinx_timeout = 10


class _UnreachableInventory(logging.Filter):
    """Report an inventory that cannot be fetched as information, not as a warning (which ``-W`` makes an error).

    Links to a project whose inventory is unreachable are then plain text; everything else still fails the build.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if "failed to reach any of the inventories" in str(record.msg):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


logging.getLogger("sphinx.sphinx.ext.intersphinx").addFilter(_UnreachableInventory())

# -- HTML output -------------------------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"biojepa {version}"

# -- Included files ----------------------------------------------------------------------------------------------

# The README (included by index.md) links to repository files, which is right on GitHub; in the docs, point the
# links at the pages that include those files instead.
_README_LINKS = {
    "](CHANGELOG.md)": "](docs/changelog.md)",
    "[Quickstart](tutorials/quickstart.ipynb)": "{doc}`Quickstart <tutorials/quickstart>`",
    "[Perturbation prediction](tutorials/perturbation.ipynb)": (
        "{doc}`Perturbation prediction <tutorials/perturbation>`"
    ),
    "[Time courses](tutorials/timecourse.ipynb)": "{doc}`Time courses <tutorials/timecourse>`",
    "[Multi-omics](tutorials/multiomics.ipynb)": "{doc}`Multi-omics <tutorials/multiomics>`",
    "[Chemical perturbations](tutorials/chemical.ipynb)": (
        "{doc}`Chemical perturbations <tutorials/chemical>`"
    ),
}


def _rewrite_readme_links(app, relative_path: Path, parent_docname: str, content: list[str]) -> None:
    if Path(relative_path).name == "README.md":
        for old, new in _README_LINKS.items():
            content[0] = content[0].replace(old, new)


# -- Docstrings ----------------------------------------------------------------------------------------------------

_UNDERLINE = re.compile(r"^-{3,}\s*$")


def _description_only_returns(app, what, name, obj, options, lines: list[str]) -> None:
    """Render description-only numpy ``Returns`` sections (the package's style, as in scanpy) as descriptions.

    Napoleon reads the first line of a numpy ``Returns`` entry as the return *type*. Where the section is a plain,
    unindented paragraph (several lines, or one ending in a full stop), put it under an empty ``:`` field so that
    napoleon renders it as the description and sphinx-autodoc-typehints adds the type from the annotation.
    Sections in the ``type`` + indented description form are left alone.
    """
    i = 0
    while i < len(lines) - 2:
        if lines[i].strip() in {"Returns", "Yields"} and _UNDERLINE.match(lines[i + 1]):
            start = end = i + 2
            while end < len(lines) and lines[end].strip():
                end += 1
            block = lines[start:end]
            if (
                block
                and not any(line[:1].isspace() for line in block)
                and " : " not in block[0]
                and (len(block) > 1 or block[0].rstrip().endswith("."))
            ):
                lines[start:end] = [":", *("    " + line for line in block)]
                end += 1
            i = end
        else:
            i += 1


def setup(app):
    app.connect("include-read", _rewrite_readme_links)
    # Before napoleon (priority 500) turns the numpy sections into field lists.
    app.connect("autodoc-process-docstring", _description_only_returns, priority=400)
