"""The foundation every layer may import, and which imports nothing of melonbench: the error types and their
one-line messages (``errors``), the name lookup with "did you mean" (``registry``), and the frozen
configuration dataclasses with their JSON round-trip and content hash (``config``)."""
