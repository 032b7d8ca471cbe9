"""Graph analysis on networkx views of a model (reachability, cut points)."""
