"""`ssmbench analyze`: a trained model's layers as dynamical systems (eigenvalues, timescales, decays,
Jacobians), written to analysis.json, PNG figures and a summary table.

Package layout (each module imports only the ones below it):

    command.py   `analyze(argv)`: arguments, rebuilding the model from its checkpoint, capturing mixer inputs
    plots.py     the figures (matplotlib, Agg backend)
    report.py    the rich summary table and analysis.json
    spectra.py   the numbers (pure torch), from the methods each mixer offers (listed there)
"""

from ssmbench.analyze.command import analyze

__all__ = ["analyze"]
