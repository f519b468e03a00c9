"""Analyses of finished runs: paired statistics across seeds, feature-shift robustness and the
flatness of the training loss around a checkpoint (``flatness``)."""
