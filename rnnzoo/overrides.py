"""Command-line overrides, in every form a W&B sweep agent writes them.

``rnnzoo train EXP ARGS`` takes omegaconf's dotlist, ``key=value``. A W&B sweep
agent fills the macros of its command with the sweep's parameters
(``wandb.sdk.launch.sweeps.utils.create_sweep_command_args``), and each form is
accepted as it comes:

* ``${args}``: ``--key=value``; ``${args_no_hyphens}``: ``key=value``;
* ``${args_no_equals}``: ``--key value``;
* ``${args_no_boolean_flags}``: ``--key=value``, a true boolean as a bare ``--key``
  and a false one left out (so it keeps the experiment's value);
* ``${args_append_hydra}``, ``${args_override_hydra}``: ``+key=value``, ``++key=value``;
* ``${args_json}``: one JSON object, ``{"key": value, ...}``, read exactly;
  ``${args_json_file}``: the path of a ``.json`` file holding it.

Except in JSON, a value is Python's ``str()`` of the parameter: ``None`` is null,
and a list or dict written as a Python literal (``['a', 'b']``, ``{'k': None}``)
is read as one; every other value is a YAML scalar, as omegaconf reads it.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from rnnzoo.errors import ConfigError
from rnnzoo.schema import field_type

#: what a value after a bare ``--key`` of a boolean field may be
BOOLEAN_WORDS = {"true", "false", "yes", "no", "on", "off", "y", "n", "1", "0"}


def normalize_overrides(args: list[str] | tuple[str, ...]) -> list[str]:
    """The overrides as omegaconf's ``key=value`` dotlist (see the module)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg.startswith("{"):  # ${args_json}
            out += _from_json(arg, "the override that starts with '{'")
            continue
        if arg.endswith(".json") and "=" not in arg:  # ${args_json_file}
            try:
                text = Path(arg).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    f"Cannot read the overrides file '{arg}': {exc.strerror or exc}. A .json "
                    "argument is read as a JSON object of overrides (W&B's ${args_json_file})."
                ) from exc
            out += _from_json(text, f"'{arg}'")
            continue
        if arg.startswith("--") and "=" not in arg:  # --key value, or a flag
            key = arg[2:]
            following = args[i] if i < len(args) else None
            if _is_value(key, following):
                arg, i = f"{key}={following}", i + 1
            else:
                arg = f"{key}=true"
        key, equals, value = arg.lstrip("-+").partition("=")  # --key=value, ++key=value
        if not equals or not key:
            raise ConfigError(
                f"Override '{arg}' is not of the form key=value (for example "
                "model.cell=lstm or trainer.steps=500)."
            )
        out.append(f"{key}={python_literal(value)}")
    return out


def _is_value(key: str, following: str | None) -> bool:
    """Whether the argument after a bare ``--key`` is its value; if not, ``--key``
    is a true boolean (``${args_no_boolean_flags}``), unless the schema says
    ``key`` is no boolean: then it lacks its value."""
    kind = field_type(key)
    if following is not None and not following.startswith("--"):
        return kind is not bool or following.lower() in BOOLEAN_WORDS
    if kind is not None and kind is not bool:
        raise ConfigError(
            f"Override '--{key}' has no value. Write '{key}=VALUE' or '--{key} VALUE'."
        )
    return False


def python_literal(value: str) -> str:
    """``value`` for omegaconf: ``None`` becomes null and a Python list or dict
    literal its JSON form (which YAML reads as the same value); anything else is
    left as it is."""
    if value == "None":
        return "null"
    if not value.startswith(("[", "{")):
        return value
    try:
        parsed = ast.literal_eval(value)
        return json.dumps(parsed) if isinstance(parsed, (list, dict)) else value
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return value  # YAML's own flow syntax, [a, b] or {k: v}, or not a literal


def _from_json(text: str, where: str) -> list[str]:
    """``key=value`` for each entry of a JSON object, every value exactly as given."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        data, problem = None, f"it is not valid JSON ({exc})"
    else:
        problem = "it is not a JSON object"
    if not isinstance(data, dict):
        raise ConfigError(
            f"Cannot read {where} as overrides: {problem}. Write key=value, or one JSON "
            'object such as \'{"model.cell": "gru", "trainer.seed": 1}\' (W&B\'s ${args_json}).'
        )
    return [f"{re.sub(r'^[-+]+', '', str(key))}={json.dumps(value)}" for key, value in data.items()]
