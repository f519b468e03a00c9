"""A module that fails while importing (tests/test_plugins.py)."""

raise RuntimeError("this plugin is broken")
