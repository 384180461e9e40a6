"""The mathematics of ssmbench: pure torch functions, no nn.Module state, no Lightning, no Hydra.

Every fast algorithm here has a slow reference beside it and a test that they agree.
"""
