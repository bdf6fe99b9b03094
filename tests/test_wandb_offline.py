"""Joining a resumed run's offline W&B folders (rnnzoo.wandb_offline), on folders
laid out as W&B 0.31 writes them; a real resumed run is in test_wandb_data.py."""

from __future__ import annotations

from pathlib import Path

from rnnzoo.wandb_offline import folders, join_parts, parts


def part_folder(wandb_dir: Path, name: str, run_id: str, marker: str) -> Path:
    """A finished offline part as W&B leaves it, each file holding ``marker``."""
    folder = wandb_dir / name
    for path in (
        f"run-{run_id}.wandb",
        "files/config.yaml",
        f"files/media/table/gradflow/curves_{marker}.table.json",
        "logs/debug.log",
        "logs/debug-internal.log",
        "tmp/code/.keep",
    ):
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(marker)
    for link in ("latest-run", "debug.log", "debug-internal.log"):
        target = folder.name if link == "latest-run" else f"{folder.name}/logs/{link}"
        (wandb_dir / link).unlink(missing_ok=True)
        (wandb_dir / link).symlink_to(target)
    return folder


def test_later_parts_join_the_first_folder_in_order(tmp_path: Path) -> None:
    """Three parts (the second one of a process killed before it could join, the
    third in the same second as the second): one folder, logs part2 and part3 in
    order of start time, every part's media, the latest part's config, the logs
    renamed, W&B's links into the folder that stays."""
    wandb_dir = tmp_path / "wandb"
    other = part_folder(wandb_dir, "offline-run-20260101_090000-zz", "zz", "other")
    first = part_folder(wandb_dir, "offline-run-20260101_100000-ab.1", "ab.1", "one")
    part_folder(wandb_dir, "offline-run-20260101_110000-ab.1", "ab.1", "two")
    part_folder(wandb_dir, "offline-run-20260101_110000-ab.1-1", "ab.1", "three")
    assert folders(wandb_dir, "ab.1")[0] == first

    assert join_parts(wandb_dir, "ab.1") == first
    assert sorted(p.name for p in wandb_dir.glob("offline-run-*")) == [other.name, first.name]
    logs = parts(first)
    assert [p.name for p in logs] == [
        "run-ab.1.wandb",
        "run-ab.1.part2.wandb",
        "run-ab.1.part3.wandb",
    ]
    assert [p.read_text() for p in logs] == ["one", "two", "three"]
    media = sorted(p.name for p in (first / "files/media/table/gradflow").iterdir())
    assert media == ["curves_one.table.json", "curves_three.table.json", "curves_two.table.json"]
    assert (first / "files/config.yaml").read_text() == "three"
    assert sorted(p.name for p in (first / "logs").iterdir()) == [
        "debug-internal.log", "debug-internal.part2.log", "debug-internal.part3.log",
        "debug.log", "debug.part2.log", "debug.part3.log",
    ]  # fmt: skip
    assert (wandb_dir / "latest-run").resolve() == first.resolve()
    assert (wandb_dir / "debug.log").read_text() == "three"
    assert (wandb_dir / "debug-internal.log").read_text() == "three"
    assert [p.read_text() for p in parts(other)] == ["other"]  # another run id: left alone

    assert join_parts(wandb_dir, "ab.1") == first  # nothing more to join
    assert len(parts(first)) == 3
    assert join_parts(wandb_dir, "nothing") is None
