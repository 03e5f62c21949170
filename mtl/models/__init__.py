"""Multi-task architectures (ResNet-34 encoder, ASPP, DeepLabV3+ decoders) built by name from the Config.

Importing this package registers every architecture (``deeplabv3p``, ``branched``, ``distillation``).
"""

from typing import Any

from mtl.models.registry import available_models, build_model, register_model

# Imported for their @register_model side effect.
from mtl.models import branched, distillation, joint  # noqa: E402,F401  isort: skip

__all__ = ["available_models", "build_model", "model_summary", "register_model"]


def __getattr__(name: str) -> Any:
    # model_summary is loaded on first use: importing mtl.models.summary here would make
    # `python -m mtl.models.summary` import that module twice (runpy warns about it).
    if name == "model_summary":
        from mtl.models.summary import model_summary

        return model_summary
    raise AttributeError(f"module 'mtl.models' has no attribute {name!r}")
