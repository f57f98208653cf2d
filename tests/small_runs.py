"""Overrides that make the default recipe's fine stage take a second in tests (a 24^3 DMTet,
16x16 renders, 4 steps); tests of whole runs add them to their own small coarse settings."""

FINE_SMALL = [
    "fine.dmtet.resolution=24", "fine.dmtet.init_close=1", "fine.dmtet.init_smooth=0.5", "fine.train.steps=4",
    "fine.train.resolution=16", "fine.train.batch_size=1", "fine.train.checkpoint_every=2", "fine.train.validation_every=2",
]
