"""Tasks: one LightningDataModule per task family, each exposing the metadata models are wired from.

`base.SequenceDataModule` holds what every task shares (metadata, splits, loaders, label checks);
`synthetic/` generates tasks from the seed, other subpackages read published data formats through
`files.FileTask` (find the source files -> cache -> read): `hub.HubTask` for Hugging Face datasets,
`lra.release.ReleaseTask` for the Long Range Arena release layout. `encoding` holds what several tasks
decode alike (byte tokens, images); `storage` the cache, the data directory and the data errors.
Nothing here knows about models.
"""
