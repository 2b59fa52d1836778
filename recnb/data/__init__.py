"""The data stage: read and validate a dataset into one typed bundle, split it by seed, fetch public data with pinned checksums, turn the feedback log into judgements."""
