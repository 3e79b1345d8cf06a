"""The artifact store's interface, its stamp (the record plus every file's size and sha256) and the local store.

An output counts only once stamped, and the stamp is written last: locally the stage writes `<out>.partial/`,
the stamp goes in, and one rename makes the folder appear; on S3 (models/s3_store.py) the files go under an
attempt-unique prefix and the stamp, PUT last, names that prefix. Readers trust the stamp only, and every file
handed out is checked against it: a damaged output is refused with one line instead of loading garbage.

Records whose uri is not in a store (a base model's folder, a hub id, a shipped data file) pass through.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from models.records import META_FILES, STAMP, Artifact
from models.storage import StorageError

UNFINGERPRINTED = META_FILES - {STAMP}  # as models.records.fingerprint_dir
PUSHED = "_pushed.json"  # the manifest of a work-area folder (push_dir), written after its files
log = logging.getLogger(__name__)


class CorruptObjectError(StorageError):
    """A stored file differs from its stamp or manifest (a flipped byte, a truncated or missing object): it is
    never loaded; the message (one line) names the object."""


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    size: int
    sha256: str


class Stamp(BaseModel):
    """What `_fingerprint.json` holds: the record, every file's size and checksum, and where the files are."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal[2] = 2
    record: Artifact
    files: dict[str, FileEntry]
    objects: str = "."  # folder of the files relative to the output: "." locally, ".attempts/<id>" on S3

    @property
    def size(self) -> int:
        return sum(entry.size for entry in self.files.values())


class Pushed(BaseModel):
    """What `_pushed.json` of a work-area folder holds: its files, written after them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    files: dict[str, FileEntry]


def file_sha256(path: Path, digests: tuple = ()) -> str:
    """sha256 of a file, feeding its bytes to `digests` as well (one read for several hashes)."""
    own = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            own.update(chunk)
            for digest in digests:
                digest.update(chunk)
    return own.hexdigest()


def manifest(folder: Path) -> tuple[str, dict[str, FileEntry]]:
    """(fingerprint, files) of `folder` in one read: the fingerprint equals models.records.fingerprint_dir's."""
    fingerprint, files = hashlib.sha256(), {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != STAMP):
        name, size = path.relative_to(folder).as_posix(), path.stat().st_size
        if path.name in UNFINGERPRINTED:
            files[name] = FileEntry(size=size, sha256=file_sha256(path))
            continue
        fingerprint.update(f"{path.relative_to(folder)}\0{size}\0".encode())
        files[name] = FileEntry(size=size, sha256=file_sha256(path, (fingerprint,)))
    return fingerprint.hexdigest()[:16], files


OUTPUT_FIX = "delete that output so its stage runs again"
CHECKPOINT_FIX = "the checkpoint is removed and the one before it resumed"


def check_file(path: Path, entry: FileEntry, name: str, full: bool = True, fix: str = OUTPUT_FIX) -> None:
    """Refuse `path` (shown as `name`) unless its size and, if `full`, its sha256 match the stamp's (or manifest's);
    the one-line CorruptObjectError ends with `fix`."""
    size = path.stat().st_size if path.is_file() else -1
    if size != entry.size:
        found = "missing" if size < 0 else f"{size} bytes, expected {entry.size}"
        raise CorruptObjectError(f"{name} is truncated or missing ({found}): {fix}")
    if full and file_sha256(path) != entry.sha256:
        raise CorruptObjectError(f"{name} is corrupt (sha256 differs from its stamp): {fix}")


def check_relative(relative: str) -> str:
    parts = relative.strip("/").split("/")
    if not relative.strip("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"'{relative}' is not a relative path inside the store; give e.g. <recipe>/<stage>/<key>")
    return "/".join(parts)


def attempt_id() -> str:
    """Unique per publish attempt: two writers of one output never write the same objects."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


class ArtifactStore:
    """One interface over the local folder and S3; stage code sees only relative names, records and local
    folders. Subclasses implement the `_`-free abstract methods below; local folders and hub ids are shared."""

    root_uri: str

    def uri_for(self, relative: str) -> str:
        raise NotImplementedError

    def check(self) -> None:
        raise NotImplementedError

    def work_path(self, relative: str) -> Path:
        """The local folder a stage writes `relative` into before it is published."""
        raise NotImplementedError

    def work_dir(self, relative: str) -> Path:
        """A fresh work folder (work_path); a stale one from a killed attempt is removed."""
        work = self.work_path(relative)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        return work

    def publish(self, work: Path, relative: str, meta: dict) -> Artifact:
        raise NotImplementedError

    def push_dir(self, local: Path, relative: str) -> None:
        raise NotImplementedError

    def pull_dir(self, relative: str, local: Path) -> bool:
        raise NotImplementedError

    def list_dirs(self, relative: str) -> list[str]:
        raise NotImplementedError

    def remove(self, relative: str) -> None:
        raise NotImplementedError

    def put_text(self, relative: str, text: str) -> str:
        """Write a small text object (a stage spec) at `relative`; returns its uri."""
        raise NotImplementedError

    def get_text(self, uri: str) -> str:
        """A small text object written by put_text (or any local file)."""
        path = Path(uri.removeprefix("file://"))
        if not path.is_file():
            raise StorageError(f"{uri} does not exist: write it with put_text first")
        return path.read_text()

    def read_stamp(self, uri: str) -> Stamp | None:
        """The stamp of the output at `uri`, or None when it is not stamped (or absent, or not in a store)."""
        return _local_stamp(Path(uri.removeprefix("file://")))

    def read_record(self, uri: str) -> Artifact | None:
        stamp = self.read_stamp(uri)
        return stamp.record if stamp else None

    def is_live(self, record: Artifact) -> bool:
        """Whether the stamped output of `record` is still in the store with the same fingerprint."""
        stamp = self.read_stamp(record.uri)
        return stamp is not None and stamp.record.fingerprint == record.fingerprint

    def local_copy(self, record: Artifact, full: bool = False) -> Path:
        """A local folder with `record`'s files, each checked against the stamp (sizes; sha256 too if `full`).
        An unstamped local folder (a base model, shipped data) is returned as it is."""
        path = Path(record.uri.removeprefix("file://"))
        if not path.exists():
            raise StorageError(f"{record.uri} is neither in the store nor a local path; publish it or fix the record")
        stamp = _local_stamp(path) if path.is_dir() else None
        if stamp is not None:
            for name, entry in stamp.files.items():
                check_file(path / name, entry, f"{path / name}", full)
        return path

    def local_source(self, record: Artifact) -> str:
        """What `from_pretrained` / a data loader should open: a verified local folder, or the hub id as it is."""
        path = Path(record.uri.removeprefix("file://"))
        if record.uri.startswith(("s3://", "file://")) or path.exists():
            return str(self.local_copy(record))
        return record.uri


def _local_stamp(folder: Path) -> Stamp | None:
    """The stamp of a local output folder; an old-format stamp (the bare record) counts, without checksums."""
    stamp = folder / STAMP
    if not stamp.is_file():
        return None
    text = stamp.read_text()
    try:
        return Stamp.model_validate_json(text)
    except ValueError:
        return Stamp(record=Artifact.model_validate_json(text), files={}, objects=".")


def stamp_record(work: Path, uri: str, meta: dict, objects: str = ".") -> Stamp:
    fingerprint, files = manifest(work)
    return Stamp(record=Artifact(uri=uri, fingerprint=fingerprint, **meta), files=files, objects=objects)


class LocalStore(ArtifactStore):
    """Outputs as folders under `root`; a record's uri is the folder's absolute path (what from_pretrained and
    every current reader of a record accept)."""

    def __init__(self, root: Path):
        self.root = root
        self.root_uri = str(root)

    def uri_for(self, relative: str) -> str:
        return str(self.root / check_relative(relative))

    def check(self) -> None:
        probe = self.root / f".probe-{attempt_id()}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise StorageError(
                f"cannot write to the artifact folder {self.root} ({err.strerror}); fix its "
                "permissions or set storage.uri / R1_STORAGE_URI"
            ) from None

    def work_path(self, relative: str) -> Path:
        """`<out>.partial` beside the output: one rename publishes it."""
        return Path(self.uri_for(relative) + ".partial")

    def publish(self, work: Path, relative: str, meta: dict) -> Artifact:
        """Stamp `work` (checksums of every file) and move it into place in one rename."""
        final = Path(self.uri_for(relative))
        stamp = stamp_record(work, str(final), meta)
        (work / STAMP).write_text(stamp.model_dump_json(indent=2))
        shutil.rmtree(final, ignore_errors=True)
        work.rename(final)
        return stamp.record

    def put_text(self, relative: str, text: str) -> str:
        path = Path(self.uri_for(relative))
        path.parent.mkdir(parents=True, exist_ok=True)
        work = path.with_name(f"{path.name}.{attempt_id()}")
        work.write_text(text)
        work.rename(path)
        return str(path)

    def push_dir(self, local: Path, relative: str) -> None:
        target = Path(self.uri_for(relative))
        if target.resolve() != local.resolve():
            shutil.copytree(local, target, dirs_exist_ok=True)
        (target / PUSHED).write_text(Pushed(files=manifest(target)[1]).model_dump_json())

    def pull_dir(self, relative: str, local: Path) -> bool:
        """`relative`'s pushed folder into `local` (nothing to copy when it is the same folder), every file checked
        against its manifest (CorruptObjectError naming the file); False when nothing complete was pushed there."""
        source = Path(self.uri_for(relative))
        if not (source / PUSHED).is_file():
            return False
        try:
            files = Pushed.model_validate_json((source / PUSHED).read_text()).files
        except ValueError:
            raise CorruptObjectError(
                f"{source / PUSHED} is not a valid manifest (damaged): that folder is refused"
            ) from None
        if source.resolve() != local.resolve():
            shutil.copytree(source, local, dirs_exist_ok=True, ignore=shutil.ignore_patterns(PUSHED))
        for name, entry in files.items():
            check_file(local / name, entry, str(source / name), fix=CHECKPOINT_FIX)
        return True

    def list_dirs(self, relative: str) -> list[str]:
        folder = Path(self.uri_for(relative))
        return sorted(p.parent.name for p in folder.glob(f"*/{PUSHED}")) if folder.is_dir() else []

    def remove(self, relative: str) -> None:
        shutil.rmtree(self.uri_for(relative), ignore_errors=True)
