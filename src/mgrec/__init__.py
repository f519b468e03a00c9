"""mgrec: Mirror Gradient and multimodal recommenders, faithful to the reference, and fast."""

__version__ = "0.2.0"
