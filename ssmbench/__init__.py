"""ssmbench: train and compare long-sequence models on long-sequence benchmarks."""

__version__ = "0.1.0"
