"""Datasets: registry, raw-file readers, filtering and splitting, Parquet store, the synthetic stream."""
