"""Architectures by name: ``@register_model("name")`` on a class or function taking the Config.

``build_model(cfg)`` builds ``cfg.model_name`` and, when ``cfg.pretrained``, loads the ImageNet weights
into its ``encoder`` (an error when they cannot be had; never a silent random init).
"""

from __future__ import annotations

from typing import Callable, TypeVar

from torch import nn

from mtl.config import Config
from mtl.models.encoder import load_imagenet_weights

ModelFactory = Callable[[Config], nn.Module]
FactoryT = TypeVar("FactoryT", bound=ModelFactory)

_MODELS: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[FactoryT], FactoryT]:
    """Register a model factory (a class or a function taking the Config) under ``name``."""

    def decorator(factory: FactoryT) -> FactoryT:
        if name in _MODELS and _MODELS[name] is not factory:
            raise ValueError(f"model name {name!r} is already registered (by {_MODELS[name]!r})")
        _MODELS[name] = factory
        return factory

    return decorator


def available_models() -> list[str]:
    return sorted(_MODELS)


def build_model(cfg: Config) -> nn.Module:
    """Build the architecture ``cfg.model_name`` (ImageNet encoder weights when ``cfg.pretrained``)."""
    factory = _MODELS.get(cfg.model_name)
    if factory is None:
        raise ValueError(
            f"unknown model_name {cfg.model_name!r}: expected one of {', '.join(available_models())}"
        )
    model = factory(cfg)
    if cfg.pretrained:
        encoder = getattr(model, "encoder", None)
        if encoder is None:
            raise TypeError(f"model {cfg.model_name!r} has no 'encoder' attribute to load ImageNet weights into")
        load_imagenet_weights(encoder, cfg.pretrained_weights_path, cfg.pretrained_weights_url)
    return model
