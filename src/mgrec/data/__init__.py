"""Data layer: reading MMRec's layout, the embedded synthetic dataset, training batches, cache."""

from mgrec.data.dataset import RecData, Split, load_dataset

__all__ = ["RecData", "Split", "load_dataset"]
