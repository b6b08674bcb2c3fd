"""The conductor: what turns a configuration into stored results, using every layer below.

``experiment`` runs one configuration (dataset, model, strategy, seed) end to end: the recommender's
pre-training (``pretrain``), the strategy's meta pre-training (``meta_pretrain``), the replay and the run's
files; ``reproduce`` runs a grid of them and reports it; ``progress`` shows a run's hooks (a live bar on a terminal,
time-stamped lines in a log)."""
