"""Records that stages hand to each other: a URI plus a fingerprint, never a model or a dataset.

An output counts only once stamped: models/stores.py publishes it (locally a `<uri>.partial/` folder, stamped, then
renamed into place; on S3 the stamp is written last) and reads records back from the stamp.
"""

from __future__ import annotations

import hashlib
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
