"""robustscale: how much compute does adversarial robustness cost?

Importing the package registers its CIFAR models in timm's registry.
"""
__version__ = "0.1.0"

from . import models  # noqa: E402,F401  (registers models in timm)
