"""Fingerprints of what a pipeline starts from, by content or revision, never by name: new data under the same path
or hub id re-runs what depends on it, unchanged data re-runs nothing.

- A local file or folder: sha256 of its bytes (a folder: of its files' relative paths, sizes and sha256s; files under
  hidden folders such as `.cache/` and the stage metadata files are left out). Each file's sha256 is cached in
  `<state>/cache/file_sha256.sqlite`, keyed by its real path and its `stat` (size, mtime_ns, ctime_ns, inode), so a
  multi-GB model folder is read once, not on every run; rewriting a file changes its mtime and ctime, so it is read
  again. A file modified less than RACY_S before it was hashed is not cached: timestamps are coarse, a second write
  within the same tick would keep them (git's "racy clean" rule).
- A hub model or dataset: its commit sha, asked of the hub (the recipe's revision, else main); offline or when the
  hub is unreachable, the commit of the local cache that a load would read (a model: the hub cache's snapshot of
  that revision; a dataset: the newest prepared copy in the `datasets` cache, which is what `load_dataset` reads
  offline). Neither: a one-line SourceError; a source is never keyed by its name.

    python -m models.fingerprints PATH_OR_HUB_ID [--dataset] [--revision REV]   # prints the fingerprint
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Literal

from models.problems import DataError
from models.records import META_FILES

log = logging.getLogger(__name__)
RACY_S = 2.0  # files modified this recently are hashed but not cached
HASH_THREADS = 4  # files of a folder hashed at once (hashlib and file reads release the GIL)
HUB_TIMEOUT_S = 10.0
FULL_SHA = re.compile(r"[0-9a-f]{40}")
RepoType = Literal["model", "dataset"]


class SourceError(DataError):
    """A source whose content or revision cannot be established; str() is one line with the fix."""


def _stat_key(path: Path) -> tuple[str, int, int, int, int]:
    info = path.stat()
    return str(path.resolve()), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino


def _digest_cache() -> sqlite3.Connection | None:
    """The digest cache of this state folder, or None if it cannot be opened. Only a state folder that exists gets one:
    a check that fails (`--check`, a bad recipe) leaves no state folder behind."""
    from models.storage import cache_root, state_dir

    if not state_dir().is_dir():
        return None
    try:
        cache_root().mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(cache_root() / "file_sha256.sqlite", timeout=30)
        db.execute(
            "CREATE TABLE IF NOT EXISTS digests (path TEXT, size INT, mtime_ns INT, ctime_ns INT, inode INT, "
            "sha256 TEXT, PRIMARY KEY (path, size, mtime_ns, ctime_ns, inode))"
        )
    except (OSError, sqlite3.Error) as err:
        log.warning("fingerprints: no digest cache (%s); every file is read", err)
        return None
    return db


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, read only when its stat changed since it was last read."""
    from models.stores import file_sha256

    key = _stat_key(path)
    db = _digest_cache()
    if db is None:
        return file_sha256(path)
    with closing(db):
        where = "path=? AND size=? AND mtime_ns=? AND ctime_ns=? AND inode=?"
        row = db.execute(f"SELECT sha256 FROM digests WHERE {where}", key).fetchone()
        if row:
            return row[0]
        digest = file_sha256(path)
        if time.time_ns() - max(key[2], key[3]) > RACY_S * 1e9 and _stat_key(path) == key:
            with db:
                db.execute("DELETE FROM digests WHERE path=?", key[:1])
                db.execute("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?)", (*key, digest))
        return digest


def _content_files(folder: Path) -> list[Path]:
    """The files a folder's fingerprint covers, sorted: not the stage metadata, nothing under a hidden folder."""
    files = (p for p in folder.rglob("*") if p.is_file() and p.name not in META_FILES)
    return sorted(p for p in files if not any(part.startswith(".") for part in p.relative_to(folder).parts[:-1]))


def content_fingerprint(path: Path) -> str:
    """A local file or folder by its content (16 hex digits); SourceError if it is neither."""
    if path.is_file():
        return file_digest(path)[:16]
    if not path.is_dir():
        raise SourceError(f"no file or folder at '{path}'; give an existing path or a hub id")
    files = _content_files(path)
    with ThreadPoolExecutor(max_workers=HASH_THREADS) as pool:
        digests = list(pool.map(file_digest, files))
    digest = hashlib.sha256(b"folder\0")
    for file, file_sha in zip(files, digests, strict=True):
        digest.update(f"{file.relative_to(path).as_posix()}\0{file.stat().st_size}\0{file_sha}\n".encode())
    return digest.hexdigest()[:16]


def _asked_sha(repo_id: str, repo_type: RepoType, revision: str | None) -> str:
    """The commit sha the hub gives for `revision` (the network call; a test may replace it)."""
    from huggingface_hub import HfApi

    info = HfApi().model_info if repo_type == "model" else HfApi().dataset_info
    return info(repo_id, revision=revision, timeout=HUB_TIMEOUT_S).sha


def _cached_sha(repo_id: str, repo_type: RepoType, revision: str | None, config: str | None) -> str | None:
    """The commit a load would read offline, from the local caches; None if nothing is cached."""
    if repo_type == "model":
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json", revision=revision, repo_type="model")
        return Path(found).parent.name if isinstance(found, str) else None
    from datasets.packaged_modules.cache.cache import _find_hash_in_cache  # what load_dataset reads offline

    try:
        return _find_hash_in_cache(repo_id, config, None, {}, None)[2]
    except (ValueError, OSError):
        return None


def hub_revision(repo_id: str, repo_type: RepoType, revision: str | None = None, config: str | None = None) -> str:
    """The commit sha of a hub model or dataset at `revision` (None: main): asked of the hub, else the local cache."""
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError, RevisionNotFoundError

    what = f"hub {repo_type} '{repo_id}'" + (f" at revision '{revision}'" if revision else "")
    try:
        return _asked_sha(repo_id, repo_type, revision)
    except (RepositoryNotFoundError, RevisionNotFoundError, HFValidationError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SourceError(f"{what}: {first}; check the id and revision (gated: set HF_TOKEN)") from None
    except Exception as err:  # noqa: BLE001 - offline or unreachable (many kinds): the local cache decides
        unreachable = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
    cached = _cached_sha(repo_id, repo_type, revision, config)
    if cached is None:
        raise SourceError(
            f"{what}: the hub cannot be asked its revision ({unreachable}) and it is not in the local cache; "
            "download it once (or go online), or give a local path"
        )
    if revision and FULL_SHA.fullmatch(revision) and cached != revision:
        raise SourceError(f"{what}: offline, the local cache holds commit {cached}; download the pinned revision")
    log.info("fingerprints: %s resolved offline to the cached commit %s", what, cached)
    return cached


def hub_fingerprint(repo_id: str, repo_type: RepoType, revision: str | None = None, config: str | None = None) -> str:
    """A hub model or dataset by its resolved commit (16 hex digits)."""
    sha = hub_revision(repo_id, repo_type, revision, config)
    return hashlib.sha256(f"hub\0{repo_type}\0{repo_id}\0{config or ''}\0{sha}".encode()).hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a local file or folder, or a hub id")
    parser.add_argument("--dataset", action="store_true", help="a hub id names a dataset (default: a model)")
    parser.add_argument("--revision", default=None, help="hub revision (commit, branch or tag)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = Path(args.source).expanduser()
    kind = "dataset" if args.dataset else "model"
    try:
        found = content_fingerprint(path) if path.exists() else hub_fingerprint(args.source, kind, args.revision)
    except SourceError as err:
        raise SystemExit(f"source error: {err}") from None
    log.info("%s %s", found, args.source)


if __name__ == "__main__":
    main()
