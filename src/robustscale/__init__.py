"""robustscale: how much compute does adversarial robustness cost?

``import robustscale`` registers its CIFAR models in timm's registry, so that
``import robustscale; timm.create_model("wide_resnet16_1")`` works. It does so without importing
timm (and torch) itself: ``python -m robustscale`` and the ``robustscale`` script import this
package first, and ``--help`` / ``--version`` must answer without torch's ~5 s start-up. If timm is
already imported, the models register now; otherwise they register the moment timm is imported
(a one-shot import hook, removed after it fires). This is one of the two lazy-import mechanisms
of docs/architecture.md; the other is the CLI's (cli.py).
"""
__version__ = "0.1.0"

import importlib  # noqa: E402
import importlib.abc  # noqa: E402
import importlib.util  # noqa: E402
import sys  # noqa: E402

MODELS_MODULE = "robustscale.models"  # importing it registers the models in timm


class _RegisterModelsWithTimm(importlib.abc.MetaPathFinder):
    """On the first ``import timm``: let timm load, then import robustscale.models (which registers)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "timm":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)  # one shot, and keeps find_spec below from finding us again
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return spec
        exec_timm = spec.loader.exec_module

        def exec_then_register(module):
            exec_timm(module)
            importlib.import_module(MODELS_MODULE)

        spec.loader.exec_module = exec_then_register
        return spec


if "timm" in sys.modules:
    importlib.import_module(MODELS_MODULE)
elif not any(isinstance(f, _RegisterModelsWithTimm) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterModelsWithTimm())
