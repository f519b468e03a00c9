"""The command line's jobs besides training a grid: ``--output`` files, ``--resume`` (evaluate
a checkpoint), ``--build_user_graph`` and ``--dry_run``. Each module is imported by the CLI (or
``mgrec.api``) when its flag is given."""
