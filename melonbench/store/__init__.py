"""The result store: where melonbench keeps what it writes (``paths``: ``$MELONBENCH_HOME`` and its folders),
how it writes (``atomic``: a file or folder appears whole or not at all), and the runs themselves (``results``: a
run's ``batches.parquet`` and ``manifest.json``, resuming checkpoints, reading many runs back)."""
