"""Data layer: reading MMRec's layout (``dataset``; ``files`` checks a dataset's files without
reading them), the embedded synthetic dataset, training batches, the cache of derived data."""
