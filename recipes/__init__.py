"""Agents assembled from components: the world model, the behaviour, the agent modules and their config schemas."""
