"""The mathematics of ssmbench: pure torch functions, no nn.Module state, no Lightning, no Hydra.

Every fast algorithm here has a slow reference beside it and a test that they agree. A reference is
named after what it computes with the suffix `_reference` (linear_scan / linear_scan_reference,
cauchy / cauchy_reference, newton_solve / newton_solve_reference, ...; the vocabulary is written down
in `ssmbench.models`).
"""
