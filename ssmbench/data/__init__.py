"""Tasks: one LightningDataModule per task family, each exposing the metadata models are wired from.

`base.SequenceDataModule` holds what every task shares (metadata, splits, loaders, label checks);
`synthetic/` generates tasks from the seed, other subpackages read published data formats.
Nothing here knows about models.
"""
