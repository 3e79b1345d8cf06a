"""Records that stages hand to each other: a URI plus a fingerprint, never a model or a dataset.

A stage writes into `<uri>.partial/`, stamps it with the fingerprint of its files, then renames it into place:
an output folder either is complete and stamped, or does not exist.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

STAMP = "_fingerprint.json"
# Files about an output rather than of it: left out of its fingerprint (spec.json names the run that made it).
META_FILES = frozenset({STAMP, "build_info.json", "spec.json"})


class Artifact(BaseModel):
    """A finished stage output: where it lives and what is in it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    uri: str
    fingerprint: str
    stage: str
    kind: Literal["model", "dataset"]
    mlflow_run_id: str | None = None


def local_path(uri: str) -> Path:
    """The local folder of a `file://` URI or a plain path."""
    return Path(uri.removeprefix("file://"))


def fingerprint_dir(folder: Path) -> str:
    """sha256 over the relative paths and contents of every file in `folder` (the stamp excluded)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in META_FILES):
        digest.update(f"{path.relative_to(folder)}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def read_record(uri: str) -> Artifact | None:
    """The record in the stamp of a published output, or None when there is no stamped output at `uri`."""
    stamp = local_path(uri) / STAMP
    return Artifact.model_validate_json(stamp.read_text()) if stamp.is_file() else None


def partial_dir(final: Path) -> Path:
    """A fresh work folder beside `final`; a stale one from a killed attempt is removed."""
    work = final.with_name(final.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


def publish(work: Path, final: Path, artifact: dict) -> Artifact:
    """Stamp `work` with its fingerprint and move it to `final` in one rename."""
    record = Artifact(uri=str(final), fingerprint=fingerprint_dir(work), **artifact)
    (work / STAMP).write_text(record.model_dump_json(indent=2))
    shutil.rmtree(final, ignore_errors=True)
    work.rename(final)
    return record
