"""Self-contained HTML reports of a run (``report.html``): figures embedded as data, no network, no JavaScript.

``page`` assembles the page, ``style`` fixes the palette and the figure look, ``figures`` draws the charts from
arrays, and one module per command (``cross_validation``, ``training``, ``explanation``) reads that command's
output folder and lays out its report.
"""
