"""Analyses of finished runs: paired statistics across seeds (``stats``), item-feature shifts
(``perturb``), the flatness of the training loss around a checkpoint (``flatness``) and its
curvature numerics (``hessian``), over shared parameter-vector helpers (``vectors``)."""
