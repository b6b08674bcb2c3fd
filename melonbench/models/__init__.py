"""Recommenders (BPR, NCF) and their registry."""
