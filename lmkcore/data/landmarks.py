"""Landmark definitions shared by every dataset in the package.

A landmark array is always ``(N, 2)`` in ``(x, y)`` pixel order (x = column,
y = row, origin at the centre of the top-left pixel) unless a function says
otherwise loudly; a batch of them is ``(M, N, 2)``.
"""
from __future__ import annotations

#: The 19 landmarks of the ISBI 2015 cephalometric challenge, in file order
#: (Wang et al., Medical Image Analysis 31, 2016). Index ``i`` here is landmark
#: ``L{i+1}`` in the papers.
ISBI_LANDMARK_NAMES: tuple[str, ...] = (
    "sella",
    "nasion",
    "orbitale",
    "porion",
    "subspinale",
    "supramentale",
    "pogonion",
    "menton",
    "gnathion",
    "gonion",
    "lower_incisal_incision",
    "upper_incisal_incision",
    "upper_lip",
    "lower_lip",
    "subnasale",
    "soft_tissue_pogonion",
    "posterior_nasal_spine",
    "anterior_nasal_spine",
    "articulare",
)

#: Pixel spacing of the ISBI 2015 images in millimetres.
ISBI_SPACING_MM: float = 0.1

#: The five landmarks of the 11-observer set of Thaler et al. (2021), as
#: 0-based indices into :data:`ISBI_LANDMARK_NAMES`, in their file order.
ISBI_OBSERVER_LANDMARKS: tuple[int, ...] = (8, 9, 2, 11, 14)


def landmark_index(name: str, names: tuple[str, ...] = ISBI_LANDMARK_NAMES) -> int:
    """Return the 0-based index of landmark ``name`` in ``names``.

    Raises
    ------
    KeyError
        With the list of known names, if ``name`` is unknown.
    """
    try:
        return names.index(name)
    except ValueError:
        raise KeyError(f"unknown landmark {name!r}; known: {', '.join(names)}") from None
