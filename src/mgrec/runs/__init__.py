"""Running grids: run folders and their logs, the grid (open, claim, record, close), the one
claim loop and the executors that train what it hands them.

    train.py     train_grid / train_grids: open -> drive with an executor -> close
    grid.py      Grid, open_grid, close_grid, status (is a recorded result current?)
    schedule.py  the claim loop and the Executor protocol
    local.py     LocalExecutor: trains in this process
    ray.py       RayExecutor: one Ray task per combination (``executor: ray``)
    folder.py    RunFolder: numbering, claims, results.jsonl
    logs.py      the console and train.log handlers

Nothing here knows a model or how training works: a combination is trained by ``mgrec.trial``.
"""
