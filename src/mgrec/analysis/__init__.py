"""Analyses of finished runs: paired statistics across seeds and feature-shift robustness."""
