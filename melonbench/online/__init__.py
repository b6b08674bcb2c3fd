"""The online loop and its parts, below the strategies that it drives.

``replay`` is the prequential loop (rank → record → update → advance); it knows a strategy only through the
:class:`~melonbench.online.replay.Updater` protocol. The parts it and the strategies share: ``stream`` (the
interactions as device tensors, batches and their spans), ``history`` (what happened before the cursor: last
interactions, neighbours, item birth), ``negatives`` (leak-free training and evaluation negatives),
``candidates`` (the persisted sampled-protocol negatives), ``metrics`` (ranks, HR@k, NDCG@k), ``timing`` (the
CUDA-synchronised stopwatch), ``cuda_graph`` (a step replayed as one CUDA graph), ``determinism`` and
``seeding`` (same seed, same bits)."""
