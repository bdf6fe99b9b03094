"""Reading YAML that a user hands in: experiment files and override values.

PyYAML's safe loader, stricter in three ways, each a hazard in a file someone
else wrote:

- no aliases (``*name``): nested aliases expand exponentially when the config is
  built (a 478-byte file can hold billions of elements); omegaconf's
  interpolation ``${other.key}`` says the same thing without copying;
- at most :data:`MAX_DEPTH` levels of nested lists and mappings: deeper data
  overflows the recursion of the YAML composer and of omegaconf;
- mapping keys are names (or integers): ``null:``, ``on:`` (a bool in YAML 1.1)
  or a date as a key cannot name a config key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from rnnzoo.errors import ConfigError

#: deepest nesting of lists and mappings; experiments need four or five levels
MAX_DEPTH = 32

#: key tags accepted: names, and integers (omegaconf takes both)
_KEY_TAGS = ("tag:yaml.org,2002:str", "tag:yaml.org,2002:int")


class Refused(yaml.YAMLError):
    """YAML that parses but that rnnzoo does not accept; ``problem`` says why and
    how to write it instead, ``mark`` where (0-based line and column)."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.mark = mark


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases, deep nesting or non-string keys."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise Refused(
                f"the alias '*{event.anchor}' repeats an anchored value; rnnzoo refuses YAML "
                "aliases (nested ones expand exponentially). Refer to another key with an "
                "omegaconf interpolation such as ${other.key} instead",
                event.start_mark,
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH + 1:  # the document itself is one level
                raise Refused(
                    f"lists and mappings are nested more than {MAX_DEPTH} levels deep; "
                    "flatten the data",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)  # `<<: {...}` merge keys first
            for key_node, _ in node.value:
                if key_node.tag not in _KEY_TAGS:
                    key = self.construct_object(key_node, deep=True)
                    raise Refused(_key_problem(key), key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _key_problem(key: Any) -> str:
    if key is None:
        return "a key is empty (null or ~); write the key's name before the colon"
    return (
        f"the key {key!r} is read as {type(key).__name__}, not as a name; config keys "
        f"are names: quote it ('{key}': ...) or rename it"
    )


def load(text: str) -> Any:
    """Parse ``text`` with :class:`StrictLoader`; raises ``yaml.YAMLError``
    (:class:`Refused` for what the strict loader turns down)."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader subclass)


def where(exc: yaml.YAMLError) -> str:
    """``" at line L, column C"`` of a YAML error, or ``""``."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""


def read_experiment(path: Path) -> dict[str, Any]:
    """The mapping an experiment file holds; ConfigError says what is wrong with it."""
    if not path.is_file():
        raise ConfigError(
            f"Experiment file '{path}' does not exist. Pass the path of a YAML "
            "experiment, for example experiments/adding.yaml."
        )
    try:
        data = load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"Experiment file '{path}' is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} "
            f"at offset {exc.start}). Save it as UTF-8."
        ) from exc
    except Refused as exc:
        raise ConfigError(f"Experiment file '{path}'{where(exc)}: {exc.problem}.") from exc
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"Experiment file '{path}' is not valid YAML: {problem}{where(exc)}. Fix "
            "the syntax there: 'key: value' lines, indented sections, closed brackets and quotes."
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"Experiment file '{path}' must hold a mapping of sections (task:, "
            f"model:, trainer:, ...), not {type(data).__name__}."
        )
    return data


def check_overrides(dotlist: list[str]) -> None:
    """Refuse aliases, deep nesting and non-name keys in override values, as in files."""
    for item in dotlist:
        value = re.split(r"(?<!\\)=", item, maxsplit=1)[-1]
        try:
            load(value)
        except Refused as exc:
            raise ConfigError(f"Cannot use the override '{short(item)}': {exc.problem}.") from exc
        except yaml.YAMLError:
            pass  # omegaconf reports it (rnnzoo.config._unparsable)


def short(item: str) -> str:
    """An override as an error message quotes it: long ones cut short."""
    return item if len(item) <= 60 else item[:40] + "..."
