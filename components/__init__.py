"""Building blocks of world-model agents, one kind per module, each registered by name."""
