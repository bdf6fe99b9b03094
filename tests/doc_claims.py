"""What README.md and docs/*.md mention, read as a user reads them (for test_docs).

* config keys (:func:`mentions`): backticked dotted keys (``trainer.steps``,
  ``model.cell_args.leak_init=1.0``), ``key=value`` overrides in commands, and the
  keys of experiments shown as YAML (with the settings of their ``variants:``).
  :func:`key_problem` says why one is not a key: a key is a field of the schema
  (:class:`rnnzoo.config.ExperimentConfig`), or, in a free-form section (``task``,
  ``model.cell_args``, ``model.activation_args``, ``model.head_args``,
  ``controllers.NAME``), a parameter of a registered component: the one the same
  command or YAML picks (``model.cell=leaky``), or else any of that kind;
* ``rnnzoo`` commands (:func:`command_lines`, :func:`parse_command`);
* plugin files: Python blocks that start with a ``# NAME.py`` line
  (:func:`plugin_files`).

A segment in capitals (``controllers.NAME``, ``model.cell_args.KEY``) is a
placeholder for any name. ``MISTAKES`` lists the keys the docs show on purpose as
errors; ``RUN_ATTRIBUTES`` the mentions of the training run's attributes.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from rnnzoo.config import ExperimentConfig, field_type
from rnnzoo.registry import Registry, type_name

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: keys the docs show as mistakes the validator catches
MISTAKES = {"model.cell_args.leak_nit"}  # writing-a-plugin.md: a misspelt parameter
#: not keys: attributes of the training run that event hooks receive
#: (writing-a-plugin.md); test_docs checks that rnnzoo.events.TrainingRun has them
RUN_ATTRIBUTES = {"run.config", "run.model", "run.task", "run.step", "run.run_dir"}
RUN_ATTRIBUTES |= {"run.device", "run.stopping", "run.log", "run.log_images", "run.log_table"}
#: the last part of a file name, not of a key (``gradflow.jsonl``, ``config.yaml``)
FILE_SUFFIXES = {"conllu", "csv", "json", "jsonl", "md", "png", "pt", "py", "toml", "txt"}
FILE_SUFFIXES |= {"wandb", "yaml", "yml"}
#: free-form mappings: the component kind whose parameters they hold, and the key
#: that picks the component
FREE_FORM = {
    "task": ("task", "task.name"),
    "model.cell_args": ("cell", "model.cell"),
    "model.activation_args": ("activation", "model.activation"),
    "model.head_args": ("head", "model.head"),
}
#: code blocks whose lines are shell commands
SHELL = {"", "bash", "sh", "shell", "console"}

SECTIONS = {f.name for f in dataclasses.fields(ExperimentConfig)}
KEY = re.compile(r"[a-z_]+(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
SPAN = re.compile(r"`([^`\n]+)`")
PLACEHOLDER = re.compile(r"[A-Z][A-Z_]*")
INVOCATION = re.compile(r"(?:[A-Z_]+=\S*\s+)*(rnnzoo(?:\s.*)?)$")


@dataclasses.dataclass(frozen=True)
class Mention:
    """A key, as written in ``doc``, with the choices made next to it."""

    doc: str
    key: str
    chosen: tuple[tuple[str, str], ...] = ()


def blocks(path: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(path.read_text(encoding="utf-8"))]


def prose(path: Path) -> str:
    return FENCE.sub("", path.read_text(encoding="utf-8"))


def command_lines(path: Path) -> Iterator[str]:
    """Every ``rnnzoo ...`` invocation: in shell blocks (several per line with
    ``&&``, ``;`` or ``|``; an environment variable may come first), after a colon
    in the comments of other blocks (``# use it with: rnnzoo train ...``), and in
    backticked spans."""
    for lang, text in blocks(path):
        for line in text.replace("\\\n", " ").splitlines():
            line = line.strip()
            if lang in SHELL:
                line = re.sub(r"(^|\s)#.*", "", line)  # a comment
                for part in re.split(r"&&|;|\|", line):
                    found = INVOCATION.match(part.strip())
                    if found:
                        yield found.group(1)
            elif line.startswith("#"):
                found = re.search(r":\s+(rnnzoo\s.*)$", line)
                if found:
                    yield found.group(1)
    for span in SPAN.findall(prose(path)):
        if span.startswith("rnnzoo "):
            yield span


def parse_command(line: str) -> tuple[list[str], str | None]:
    """``(plugin files from -p, the command or None)`` of an ``rnnzoo`` line."""
    tokens = shlex.split(line, comments=True)[1:]
    plugins: list[str] = []
    while tokens:
        token = tokens.pop(0)
        if token in ("-p", "--plugin") and tokens:
            plugins.append(tokens.pop(0))
        elif token.startswith("--plugin="):
            plugins.append(token.split("=", 1)[1])
        elif token in ("--debug", "--version", "-h", "--help"):
            continue
        elif token == "...":
            return plugins, None
        else:
            return plugins, token
    return plugins, None


def as_key(text: str) -> tuple[str, str] | None:
    """``(key, value)`` when ``text`` is a config key, with or without a value."""
    key, _, value = text.removeprefix("--").partition("=")
    if not KEY.fullmatch(key) or key.split(".")[0] not in SECTIONS:
        return None
    if not value and "=" not in text and key.rsplit(".", 1)[-1] in FILE_SUFFIXES:
        return None  # a file name such as gradflow.jsonl
    return key, value


def mentions(path: Path, root: Path = ROOT) -> Iterator[Mention]:
    doc = path.relative_to(root).as_posix()
    for span in SPAN.findall(prose(path)):
        found = as_key(span)
        if found and " " not in span:
            yield Mention(doc, found[0])
    for line in command_lines(path):
        pairs = [p for p in map(as_key, shlex.split(line, comments=True)) if p]
        chosen = tuple((k, v) for k, v in pairs if k in {c for _, c in FREE_FORM.values()})
        yield from (Mention(doc, key, chosen) for key, _ in pairs)
    for lang, text in blocks(path):
        if lang in ("yaml", "yml"):
            data = yaml.safe_load(text)
            if isinstance(data, dict) and set(data) - {"variants"} <= SECTIONS:
                named = data.pop("variants", None) or {}  # each variant's settings, too
                for settings in [data, *named.values()]:
                    flat = dict(flatten(settings))
                    chosen = tuple((k, str(flat[k])) for _, k in FREE_FORM.values() if k in flat)
                    yield from (Mention(doc, key, chosen) for key in flat)


def flatten(data: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, value in data.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and value:
            yield from flatten(value, key + ".")
        else:
            yield key, value


def param_names(registry: Registry, kind: str, name: str) -> set[str]:
    return {p.name for p in registry.get(kind, name).params()}


def key_problem(mention: Mention, registry: Registry) -> str | None:
    """Why ``mention.key`` is not a config key, or None."""
    parts = mention.key.split(".")
    chosen = dict(mention.chosen)
    for i in range(1, len(parts) + 1):
        prefix, rest = ".".join(parts[:i]), parts[i:]
        annotation = field_type(prefix)
        if annotation is None:
            return f"'{prefix}' is not in the config schema"
        if not rest:
            return None
        if dataclasses.is_dataclass(annotation):
            continue
        if prefix == "controllers":
            name, *params = rest
            names = registry.names("controller")
            if not PLACEHOLDER.fullmatch(name):
                if name not in names:
                    return f"no controller is called '{name}'"
                names = [name]
            taken = set().union(*(param_names(registry, "controller", n) for n in names))
            if len(params) > 1 or (params and params[0] not in taken):
                return f"controller '{name}' takes no '{'.'.join(params)}'"
            return None
        if prefix in FREE_FORM:
            kind, picker = FREE_FORM[prefix]
            if len(rest) > 1:
                return f"'{prefix}.{rest[0]}' is a parameter: it has no keys"
            if (prefix, rest[0]) == ("task", "name") or PLACEHOLDER.fullmatch(rest[0]):
                return None
            names = [chosen[picker]] if picker in chosen else registry.names(kind)
            if not any(rest[0] in param_names(registry, kind, n) for n in names):
                return f"no {kind} ({', '.join(names)}) takes '{rest[0]}'"
            return None
        return f"'{prefix}' is a {type_name(annotation)}: it has no key '{rest[0]}'"
    raise AssertionError("unreachable: the last prefix is the whole key")


def plugin_files(tmp_path: Path) -> dict[str, Path]:
    """The plugin files the docs show, written out: ``{file name: path}``."""
    files = {}
    for path in DOCS:
        for lang, text in blocks(path):
            first = re.match(r"# (\w+\.py)\b", text)
            if lang == "python" and first:
                assert first.group(1) not in files, f"two files named {first.group(1)}"
                files[first.group(1)] = tmp_path / first.group(1)
                files[first.group(1)].write_text(text, encoding="utf-8")
    return files


def reference_rows(path: Path) -> dict[str, str]:
    """``{key: default}`` from the tables of the configuration reference: rows
    whose first cell is a backticked key and that have a default column."""
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if len(cells) == 4 and re.fullmatch(r"`[a-z_][a-z0-9_.]*`", cells[0]):
            rows[cells[0].strip("`")] = cells[2].strip("`")
    return rows


def schema_keys(cls: Any = ExperimentConfig, prefix: str = "") -> Iterator[str]:
    """Every key of the schema: sections and their fields, in order."""
    for f in dataclasses.fields(cls):
        yield prefix + f.name
        annotation = field_type(prefix + f.name)
        if dataclasses.is_dataclass(annotation):
            yield from schema_keys(annotation, f"{prefix}{f.name}.")
