"""Read a W&B offline run back from its own ``run-<id>.wandb`` file.

The file is a LevelDB-style log: a 7-byte header (``:W&B``, a 2-byte magic
number, a 1-byte version), then 32 KiB blocks counted from the start of the
file. Each block holds records with a 7-byte header: CRC-32 (little endian) of
the type byte and the payload, the payload length (2 bytes, little endian) and
the type (FULL=1, or FIRST=2 / MIDDLE=3 / LAST=4 for a payload split across
blocks). A block's tail shorter than a record header is zero padding. Each
reassembled payload is a ``wandb_internal_pb2.Record`` protocol buffer.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

from rnnzoo.wandb_offline import parts

HEADER = b":W&B"
HEADER_SIZE = 7
BLOCK_SIZE = 32 * 1024
RECORD_HEADER = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def payloads(path: Path) -> Iterator[bytes]:
    """The reassembled record payloads of ``path``, each checked against its CRC."""
    data = path.read_bytes()
    if data[:4] != HEADER or len(data) < HEADER_SIZE:
        raise ValueError(f"{path} does not start with the W&B header")
    offset, pending = HEADER_SIZE, b""
    while offset + RECORD_HEADER.size <= len(data):
        left_in_block = BLOCK_SIZE - offset % BLOCK_SIZE
        if left_in_block < RECORD_HEADER.size:
            offset += left_in_block
            continue
        crc, length, kind = RECORD_HEADER.unpack_from(data, offset)
        if crc == 0 and length == 0 and kind == 0:  # padding up to the block end
            offset += left_in_block
            continue
        start = offset + RECORD_HEADER.size
        chunk = data[start : start + length]
        if len(chunk) != length or zlib.crc32(bytes([kind]) + chunk) != crc:
            raise ValueError(f"{path}: corrupt record at byte {offset}")
        offset = start + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""
        else:
            raise ValueError(f"{path}: unknown record type {kind} at byte {offset}")


def records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    for payload in payloads(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        yield record


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


@dataclass
class OfflineRun:
    """What one offline run file says: run metadata, config, history and summary."""

    run_id: str = ""
    project: str = ""
    group: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    record_types: set[str] = field(default_factory=set)
    #: define_metric: name -> its step metric and summary aggregations
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: logged artifacts: type, name, aliases, metadata, and their files
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    sweep_id: str = ""
    #: the console output W&B captured, as one text
    output: str = ""


def read_run(path: Path) -> OfflineRun:
    run = OfflineRun()
    for record in records(path):
        kind = record.WhichOneof("record_type")
        run.record_types.add(str(kind))
        if kind == "run":
            r = record.run
            run.run_id, run.project, run.group = r.run_id, r.project, r.run_group
            run.name, run.tags, run.sweep_id = r.display_name, list(r.tags), r.sweep_id
            for item in r.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[_key(item)] = json.loads(item.value_json)
        elif kind == "metric" and record.metric.name:
            m = record.metric
            aggregates = {f.name for f, on in m.summary.ListFields() if on}
            run.metrics[m.name] = {"step_metric": m.step_metric, "summary": aggregates}
        elif kind == "output_raw":
            run.output += record.output_raw.line
        elif kind == "artifact":
            a = record.artifact
            run.artifacts.append(
                {
                    "type": a.type,
                    "name": a.name,
                    "aliases": list(a.aliases),
                    "metadata": json.loads(a.metadata) if a.metadata else {},
                    "files": {c.path: Path(c.local_path) for c in a.manifest.contents},
                }
            )
    return run


def logged_tables(path: Path, key: str) -> list[tuple[int, dict[str, Any]]]:
    """Every W&B table logged under ``key`` in the offline run file ``path``, in
    order, with its ``trainer/step``: each ``{"columns": [...], "data": [[...],
    ...]}``, read from the run's ``files/`` folder where W&B wrote it."""
    found = []
    for row in read_run(path).history:
        if row.get(f"{key}/_type") == "table-file":
            table = json.loads((path.parent / "files" / row[f"{key}/path"]).read_text())
            found.append((int(row["trainer/step"]), table))
    return found


def tables(path: Path, key: str) -> dict[int, dict[str, Any]]:
    """:func:`logged_tables` by ``trainer/step`` (the last of one step)."""
    return dict(logged_tables(path, key))


def run_files(run_dir: Path) -> list[Path]:
    """The offline run files under ``run_dir/wandb``, oldest first: by folder, and in
    a folder that holds a resumed run's parts, first part first."""
    return [log for f in sorted((run_dir / "wandb").glob("offline-run-*")) for log in parts(f)]


def rows_by_step(path: Path, key: str) -> dict[int, list[dict[str, Any]]]:
    """Every row of every W&B table ``key`` in ``path`` as ``{column: value}``,
    grouped by the rows' own ``step`` column: a table logged within a share of the
    run's time may hold the rows of several steps (:mod:`rnnzoo.wandb_tables`)."""
    found: dict[int, list[dict[str, Any]]] = {}
    for _, table in logged_tables(path, key):  # every table, also two at one step
        for values in table["data"]:
            row = dict(zip(table["columns"], values, strict=True))
            found.setdefault(int(row["step"]), []).append(row)
    return found
