"""One perturbation value and its one parser.

A perturbation label names the perturbed genes of a cell joined by a delimiter (``"KLF1+MAP2K6"``); the control
label (e.g. ``"control"``) names unperturbed cells. GEARS-style labels are understood too: ``"MEIS1+ctrl"`` is the
single ``MEIS1`` and ``"ctrl"`` is control. A parsed :class:`Perturbation` holds its genes sorted and deduplicated,
with one dose per gene aligned to them (a dose string is read in the order the label was written), so
``"SET+KLF1"`` with doses ``"1+2"`` and ``"KLF1+SET"`` with doses ``"2+1"`` are the same perturbation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CONTROL_ALIASES", "Perturbation", "parse_dose", "parse_perturbation"]

#: Tokens that always mean "no gene perturbed", whatever the control value (GEARS writes ``"A+ctrl"``).
CONTROL_ALIASES = ("ctrl",)


@dataclass(frozen=True)
class Perturbation:
    """A set of perturbed genes with their doses and the perturbation type.

    Parameters
    ----------
    genes
        Sorted, distinct gene names; empty for control.
    doses
        One dose per gene of ``genes`` (same order), or ``None`` when no dose was given.
    type
        Perturbation type (e.g. ``"CRISPRa"``), or ``None``.

    Examples
    --------
    >>> from biojepa.perturbation import Perturbation
    >>> p = Perturbation(("KLF1", "MAP2K6"), doses=(2.0, 1.0))
    >>> p.label(), p.dose_label(), p.is_control, p.dose_of("MAP2K6")
    ('KLF1+MAP2K6', '2+1', False, 1.0)
    """

    genes: tuple[str, ...]
    doses: tuple[float, ...] | None = None
    type: str | None = None

    def __post_init__(self):
        if list(self.genes) != sorted(set(self.genes)):
            raise ValueError(
                f"Perturbation genes {self.genes!r} must be sorted and distinct; use `parse_perturbation`."
            )
        if self.doses is not None and len(self.doses) != len(self.genes):
            raise ValueError(f"Perturbation {self.genes!r} has {len(self.doses)} doses for {len(self.genes)} genes.")

    @property
    def is_control(self) -> bool:
        """Whether no gene is perturbed."""
        return not self.genes

    def label(self, delimiter: str = "+", control_value: str = "control") -> str:
        """Canonical label: sorted genes joined by ``delimiter``, ``control_value`` for control."""
        return delimiter.join(self.genes) if self.genes else control_value

    def dose_label(self, delimiter: str = "+") -> str | None:
        """Doses aligned with :meth:`label`, joined by ``delimiter`` (``None`` without doses)."""
        if self.doses is None:
            return None
        return delimiter.join(f"{d:g}" for d in self.doses)

    def dose_of(self, gene: str) -> float:
        """Dose of ``gene`` (1 without doses)."""
        return 1.0 if self.doses is None else self.doses[self.genes.index(gene)]


def _check_delimiter(delimiter: str) -> None:
    if not isinstance(delimiter, str) or not delimiter or delimiter.isspace():
        raise ValueError(f"The combination delimiter must be a non-empty, non-blank string, got {delimiter!r}.")


def parse_dose(value, n_genes: int, delimiter: str = "+", key: str = "dose") -> list[float]:
    """Per-gene doses in the written order: one number (every gene gets it) or one per gene joined by ``delimiter``.

    Parameters
    ----------
    value
        A number, or a string of numbers joined by ``delimiter``.
    n_genes
        Number of genes the doses belong to.
    delimiter
        String joining the doses of a combination.
    key
        Name of the dose's source, used in error messages.

    Returns
    -------
    ``max(n_genes, 1)`` doses.

    Raises
    ------
    ValueError
        Naming the value when it is not a number, negative or not finite, or when the number of doses differs from
        the number of genes.

    Examples
    --------
    >>> from biojepa.perturbation import parse_dose
    >>> parse_dose("1+2", 2), parse_dose(0.5, 2)
    ([1.0, 2.0], [0.5, 0.5])
    """
    parts = str(value).split(delimiter) if isinstance(value, str) else [value]
    try:
        doses = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise ValueError(f"Dose {value!r} in {key!r} is not a number or numbers joined by {delimiter!r}.") from None
    if any(not np.isfinite(d) or d < 0 for d in doses):
        raise ValueError(f"Dose {value!r} in {key!r} must be finite and >= 0.")
    if len(doses) == 1:
        return doses * max(n_genes, 1)
    if len(doses) != n_genes:
        raise ValueError(
            f"Dose {value!r} in {key!r} gives {len(doses)} values for a perturbation of {n_genes} genes; "
            f"give one dose, or one per gene joined by {delimiter!r}."
        )
    return doses


def parse_perturbation(
    label: str,
    control_value: str,
    delimiter: str = "+",
    dose=None,
    perturbation_type: str | None = None,
    dose_key: str = "dose",
) -> Perturbation:
    """Parse a perturbation label (and its dose) into a :class:`Perturbation`.

    Parameters
    ----------
    label
        The control value, one gene (``"KLF1"``) or genes joined by ``delimiter`` (``"KLF1+MAP2K6"``). Tokens
        equal to ``control_value`` or ``"ctrl"`` are dropped, so GEARS-style ``"MEIS1+ctrl"`` is the single
        ``MEIS1``. Whitespace around genes is ignored.
    control_value
        Label of control cells.
    delimiter
        String joining the genes of a combination (and their doses).
    dose
        ``None``, one number for every gene, or one number per gene joined by ``delimiter`` in the order the genes
        are written in ``label``. Doses follow their genes when those are sorted.
    perturbation_type
        Type of the perturbation, kept as given.
    dose_key
        Name of the dose's source, used in error messages.

    Returns
    -------
    The perturbation, genes sorted and deduplicated (a duplicated gene keeps its first dose).

    Raises
    ------
    ValueError
        For a label that is not a string or is malformed (empty, ``"A++B"``, ``"+A"``, ``"A+"``), or a dose that
        is not a number or whose count differs from the number of genes; the message names the value.

    Examples
    --------
    >>> from biojepa.perturbation import parse_perturbation
    >>> parse_perturbation("MAP2K6+KLF1", "control", dose="1+2")
    Perturbation(genes=('KLF1', 'MAP2K6'), doses=(2.0, 1.0), type=None)
    >>> parse_perturbation("MEIS1+ctrl", "control").genes, parse_perturbation("control", "control").is_control
    (('MEIS1',), True)
    """
    _check_delimiter(delimiter)
    if not isinstance(label, str):
        raise ValueError(f"Perturbation label {label!r} is not a string; fill missing labels before use.")
    written = []
    if label != control_value:
        for token in label.split(delimiter):
            gene = token.strip()
            if not gene:
                raise ValueError(
                    f"Malformed perturbation label {label!r}: empty gene name (check for doubled, leading or trailing "
                    f"{delimiter!r}); expected e.g. 'A{delimiter}B', a single gene, or the control value "
                    f"{control_value!r}."
                )
            if gene != control_value and gene not in CONTROL_ALIASES:
                written.append(gene)
    doses = None
    if dose is not None:
        values = parse_dose(dose, len(written), delimiter, dose_key)
        doses = dict(reversed(list(zip(written, values, strict=False))))  # first dose of a duplicated gene wins
    genes = tuple(sorted(set(written)))
    aligned = None if doses is None else tuple(doses[g] for g in genes)
    return Perturbation(genes, aligned, None if perturbation_type is None else str(perturbation_type))
