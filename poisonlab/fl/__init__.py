"""Federated learning: partitions, the vectorized round loop, update attacks, robust aggregation."""
