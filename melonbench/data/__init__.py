"""Datasets, from a raw file to a prepared stream: ``registry`` (every dataset's source, checksum, terms and
reader), ``download`` and ``archives`` (fetching and opening raw files safely), ``readers`` / ``readers_csv`` /
``readers_json`` (raw records to interactions, reading a ``context``), ``synthetic`` (the built-in drifting stream),
``filtering`` (de-duplication, k-core, dense ids, the chronological split), ``prepare`` (the whole pipeline),
``card`` (the dataset card), ``store`` (prepared datasets on disk) and ``catalog`` (listing them)."""
