"""User commands that read runs (entry points dreamerkit-learn, -sweep-summary, -reconstructions, ...)."""
