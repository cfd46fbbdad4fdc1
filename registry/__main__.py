"""``python -m registry``: list every registered component (built-in and plug-in) and every recipe preset."""

from registry.cli import main

main()
