"""Named variants of an experiment: settings that go together, chosen by one name.

An experiment file may hold a top-level ``variants:`` mapping, each name to the
settings it stands for (dotted keys, or nested sections)::

    variants:
      elman-relu: {model.cell: elman, model.activation: relu}

``variant=elman-relu`` (in the overrides, or ``variant:`` in the file) applies
those settings over the file, below the command line's overrides, the way a
config group of Hydra is chosen; ``-m variant=lstm,elman-relu`` sweeps them.
The run keeps the name in ``variant`` (its ``config.yaml`` and W&B config), and
``rnnzoo compare`` labels configurations by it. A saved ``config.yaml`` holds
the chosen settings already and no ``variants:``, so there ``variant`` is only
the name: loading it again applies nothing.
"""

from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rnnzoo.errors import ConfigError, did_you_mean

#: a variant's name: it is swept with commas and names run folders
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
#: keys a variant cannot set: the choice itself
RESERVED = ("variant", "variants")


def take(data: dict[str, Any], source: str) -> dict[str, DictConfig]:
    """Remove ``variants`` from an experiment file's ``data``; each variant's
    settings as a config layer (dotted keys expanded), checked for form only:
    the keys and values are checked as every layer is (:func:`rnnzoo.config.load`)."""
    given = data.pop("variants", None)
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise ConfigError(
            f"'variants' in {source} must be a mapping of names to settings, such as "
            "variants: {elman-relu: {model.cell: elman, model.activation: relu}}; "
            f"got {type(given).__name__}."
        )
    layers = {}
    for name, settings in given.items():
        where = f"Variant '{name}' in {source}"
        if not NAME.fullmatch(str(name)):
            raise ConfigError(
                f"{where} has a name that cannot be used: a variant's name is 1 to 64 letters, "
                "digits, '_', '.', '+' or '-' (no commas or spaces: it is swept as "
                "variant=a,b and names run folders). Rename it."
            )
        if not isinstance(settings, dict) or not settings:
            raise ConfigError(
                f"{where} must be a mapping of the settings it stands for, such as "
                f"{{model.cell: elman, model.activation: relu}}; got {settings!r}."
            )
        layer = OmegaConf.create({})
        for key, value in settings.items():
            if str(key).split(".")[0] in RESERVED:
                raise ConfigError(
                    f"{where} sets '{key}'; a variant cannot choose a variant. Write the "
                    "settings themselves."
                )
            try:
                OmegaConf.update(layer, str(key), value, merge=True)
            except OmegaConfBaseException as exc:
                raise ConfigError(
                    f"{where} sets '{key}', which is not a config key (dotted names such as "
                    f"model.cell, or nested sections): {str(exc).splitlines()[0]}"
                ) from exc
        layers[str(name)] = layer
    return layers


def pick(variants: dict[str, DictConfig], name: str, where: str, source: str | None) -> DictConfig:
    """The layer of variant ``name``; a :class:`ConfigError` listing the known
    variants when there is none of that name."""
    if name in variants:
        return variants[name]
    if variants:
        known = (
            f"{source} defines the variants {', '.join(variants)}.{did_you_mean(name, variants)}"
        )
        fix = "Choose one of them"
    else:
        known = f"{source} defines no variants." if source else "No experiment file is given."
        fix = "Define it under a top-level variants: mapping of the experiment file and choose it"
    raise ConfigError(
        f"Unknown variant '{name}' ({where}). {known} {fix} with variant=NAME, or sweep "
        "several with -m variant=a,b (see docs/configuration.md)."
    )
