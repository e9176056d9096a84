"""``python -m robustscale`` (used by torchrun: ``torchrun -m robustscale train ...``)."""
from .cli import main

raise SystemExit(main())
