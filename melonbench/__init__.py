"""melonbench: a benchmark of online update strategies for recommender systems.

It reproduces and extends MeLON (Kim et al., AAAI 2022, "Meta-Learning for Online Update of Recommender
Systems"): real interaction streams are prepared once, a recommender is pre-trained once per
(dataset, model, seed), and every update strategy replays the same online stream under a leak-free
prequential protocol (each batch is ranked first, then trained on).
"""

__version__ = "0.1.0"
