"""The plumbing that runs an agent: training loop, experience collection, checkpoints, logging, evaluation."""
