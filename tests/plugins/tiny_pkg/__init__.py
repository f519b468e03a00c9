"""A model from outside mgrec, as a researcher would write it (tests/test_plugins.py)."""
