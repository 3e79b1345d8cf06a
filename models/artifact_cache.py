"""The local download cache of remote outputs: `<state>/cache/<fingerprint>/`, bounded in size.

An entry is complete once its `_fingerprint.json` (the stamp it was verified against) is in place: entries are
filled in `<fingerprint>.partial-<attempt>/` and renamed, so a killed download leaves no half entry. The stamp's
modification time is the entry's last use; past the size bound the least recently used entries are removed
(never the one just handed out).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

from models.records import STAMP
from models.storage import StorageError
from models.stores import Stamp, attempt_id, check_file

log = logging.getLogger(__name__)


class ArtifactCache:
    def __init__(self, root: Path, max_bytes: int):
        self.root = root
        self.max_bytes = max_bytes

    def entry(self, fingerprint: str) -> Path:
        return self.root / fingerprint

    def get(self, fingerprint: str) -> Path | None:
        """The complete entry of `fingerprint` with every file of its stamp's size, marked as used. Its files were
        verified in full when downloaded; no request to the store is needed."""
        folder = self.entry(fingerprint)
        try:
            stamp = Stamp.model_validate_json((folder / STAMP).read_text())
            for name, entry in stamp.files.items():
                check_file(folder / name, entry, name, full=False)
        except FileNotFoundError:
            return None
        except (StorageError, ValueError):
            log.warning("cache entry %s is damaged; fetching it again", folder)
            shutil.rmtree(folder, ignore_errors=True)
            return None
        os.utime(folder / STAMP)
        return folder

    def new_entry(self, fingerprint: str) -> Path:
        """An empty folder to fill; hand it to `commit` when every file is verified."""
        work = self.root / f"{fingerprint}.partial-{attempt_id()}"
        work.mkdir(parents=True)
        return work

    def commit(self, work: Path, stamp: Stamp) -> Path:
        """Make `work` the entry of `stamp` (another process may have won the race: then its entry is kept)."""
        (work / STAMP).write_text(stamp.model_dump_json())
        folder = self.entry(stamp.record.fingerprint)
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            work.rename(folder)
        except OSError:
            if not folder.is_dir():
                raise
            shutil.rmtree(work, ignore_errors=True)
        self.evict(keep=folder)
        return folder

    def evict(self, keep: Path) -> None:
        """Remove least recently used entries until the cache fits its bound (`keep` stays)."""
        entries = []
        for stamp_file in self.root.glob(f"*/{STAMP}"):
            with contextlib.suppress(OSError, ValueError):
                size = Stamp.model_validate_json(stamp_file.read_text()).size
                entries.append((stamp_file.stat().st_mtime, stamp_file.parent, size))
        total = sum(size for _, _, size in entries)
        for _, folder, size in sorted(entries):
            if total <= self.max_bytes:
                break
            if folder != keep:
                log.info("cache: evicting %s (%d bytes)", folder.name, size)
                shutil.rmtree(folder, ignore_errors=True)
                total -= size
