"""Partial configs: models with every config key optional and unset by default, derived from the one
schema in :mod:`mtl.config`, for the keys an ablation entry, a variant or a grid sets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, AllowInfNan, BaseModel, BeforeValidator, ConfigDict, Field, create_model

from mtl.config import Config


def config_value_type(key: str) -> Any:
    """The type of config key ``key`` with its constraints and field validators, to validate a value of it
    on its own (a grid value); the cross-key rules need the whole Config and are not part of it."""
    field = Config.model_fields[key]
    markers: list[Any] = list(field.metadata)
    if field.annotation is float:
        markers.append(AllowInfNan(False))
    for decorator in Config.__pydantic_decorators__.field_validators.values():
        if key in decorator.info.fields or "*" in decorator.info.fields:
            wrap = BeforeValidator if decorator.info.mode == "before" else AfterValidator
            markers.append(wrap(decorator.func))
    # A tuple first: mypy reads Annotated[(a, *b)] as Python 3.11's Annotated[a, *b] and refuses it on 3.10.
    args = (field.annotation, *markers)
    return Annotated[args]


def _no_default_in_schema(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # unset means "the base's value", not null


def partial_config_model(
    name: str, doc: str, value_type: Any = None, schema_extra: dict[str, Any] | None = None, **field_options: Any
) -> type[BaseModel]:
    """A model with every config key optional and unset by default (extra keys forbidden), for the config
    keys an entry, a variant or a grid sets. ``value_type(key)`` gives each key's type (default: the key's
    own); the cross-key rules of :class:`Config` apply once the keys meet their base, not here."""
    value_type = value_type or config_value_type
    # key -> (type, FieldInfo), typed Any: mypy checks a **dict against each of create_model's keywords (__base__, ...)
    fields: dict[str, Any] = {
        key: (
            value_type(key),
            Field(None, description=field.description, json_schema_extra=_no_default_in_schema, **field_options),
        )
        for key, field in Config.model_fields.items()
    }
    config = ConfigDict(extra="forbid", json_schema_extra=schema_extra)
    return create_model(name, __config__=config, __doc__=doc, **fields)


# Config keys an entry or a variant sets; ``model_dump(exclude_unset=True)`` gives the values given.
# Made at run time, so a type checker knows it as a model with unknown fields: a BaseModel.
if TYPE_CHECKING:
    ConfigOverrides = BaseModel
else:
    ConfigOverrides = partial_config_model("ConfigOverrides", "Config keys (see mtl-train --help) and their values.")
