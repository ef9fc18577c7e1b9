"""The project's Hydra sweeper (conf/hydra/sweeper/covering.yaml)."""
