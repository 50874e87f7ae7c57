"""``python -m orchestrator`` runs the sentiloop CLI."""

from orchestrator.cli import main

main()
