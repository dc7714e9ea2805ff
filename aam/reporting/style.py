"""The look of report figures: a colour-blind-safe palette (Okabe and Ito) with one fixed colour per method, and
the matplotlib settings every report figure is drawn under."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour-vision deficiencies.
OKABE_ITO = {
    "blue": "#0072B2", "orange": "#E69F00", "green": "#009E73", "vermillion": "#D55E00",
    "purple": "#CC79A7", "sky": "#56B4E9", "yellow": "#F0E442", "black": "#000000",
}
METHOD_COLOURS = {  # the same colour for the same method in every figure of every report
    "aam": OKABE_ITO["blue"], "blend": OKABE_ITO["purple"], "forest": OKABE_ITO["green"],
    "clr-linear": OKABE_ITO["orange"], "boosted": OKABE_ITO["vermillion"],
}
_SPARE = [OKABE_ITO[k] for k in ("sky", "black", "yellow")]
RAISES, LOWERS = OKABE_ITO["vermillion"], OKABE_ITO["blue"]  # direction of an ASV's effect


def method_colour(name: str) -> str:
    """The colour of a method: fixed for AAM, the blend and the built-in baselines; any other name gets a spare
    colour chosen from its name, so it too keeps its colour from one figure to the next."""
    if name in METHOD_COLOURS:
        return METHOD_COLOURS[name]
    digest = int(hashlib.md5(name.encode("utf-8")).hexdigest(), 16)
    return _SPARE[digest % len(_SPARE)]


def class_colour(index: int) -> str:
    """The colour of the ``index``-th class (cycling through the palette)."""
    order = ["blue", "orange", "green", "vermillion", "purple", "sky", "black", "yellow"]
    return OKABE_ITO[order[index % len(order)]]


RC = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.color": "#dddddd", "grid.linewidth": 0.6, "axes.axisbelow": True,
    "svg.fonttype": "none", "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica", "sans-serif"],
}


@contextmanager
def report_style() -> Iterator[None]:
    """Draw under the report's settings (text stays text in SVG; light grid; no top/right frame)."""
    with plt.rc_context(RC):
        yield
