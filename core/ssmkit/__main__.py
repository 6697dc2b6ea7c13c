"""``python -m ssmkit`` (also what ``torchrun -m ssmkit`` runs on every rank)."""

from ssmkit.cli import main

raise SystemExit(main())
