"""The artifact store on S3 or an S3-compatible server (MinIO, Ceph), through boto3 and the standard AWS
credential chain.

Layout under s3://bucket/prefix/<relative>/ (one stage output):

    .attempts/<attempt>/<files>   one publish attempt's objects (multipart above the threshold)
    _fingerprint.json             the stamp, PUT last: record, each file's size and sha256, which attempt holds them

Two writers of one output never overwrite each other's objects (no copy is needed); the last stamp wins and
names a complete attempt. Objects of attempts no stamp names are removed by `clean_attempts`. Downloads land in
the size-bounded cache <state>/cache/<fingerprint>/ and are checked against the stamp's sha256.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

from models.artifact_cache import ArtifactCache
from models.records import STAMP, Artifact
from models.storage import StorageConfig, StorageError, cache_root
from models.stores import (
    CHECKPOINT_FIX,
    PUSHED,
    ArtifactStore,
    CorruptObjectError,
    FileEntry,
    Pushed,
    Stamp,
    attempt_id,
    check_file,
    check_relative,
    file_sha256,
    manifest,
    stamp_record,
)

MB = 1 << 20
SHA256 = {"ChecksumAlgorithm": "SHA256"}  # the server checks each PUT and part, and keeps the whole object's SHA-256
log = logging.getLogger(__name__)


# Client policy. A transient fault (500, 503 SlowDown, a dropped or reset connection, no answer within
# READ_TIMEOUT_S) is retried in botocore's standard mode, up to MAX_ATTEMPTS tries with jittered exponential backoff
# (base 50 ms, 1 s for throttling such as SlowDown, at most 20 s): with 10% of requests failing independently, a call
# fails after all its tries about once in 10^8. A dead endpoint (connection refused) fails in seconds.
CONNECT_TIMEOUT_S, READ_TIMEOUT_S, MAX_ATTEMPTS = 5, 60, 8
PREFLIGHT_CONNECT_TIMEOUT_S, PREFLIGHT_READ_TIMEOUT_S, PREFLIGHT_MAX_ATTEMPTS = 2, 5, 5
BODY_ATTEMPTS = 5  # reads of an object's body cut short (botocore does not retry a body read)


def s3_client(endpoint_url: str | None, preflight: bool = False):
    """A boto3 S3 client on the standard credential chain; the preflight one gives up within seconds."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=PREFLIGHT_CONNECT_TIMEOUT_S if preflight else CONNECT_TIMEOUT_S,
        read_timeout=PREFLIGHT_READ_TIMEOUT_S if preflight else READ_TIMEOUT_S,
        retries={"total_max_attempts": PREFLIGHT_MAX_ATTEMPTS if preflight else MAX_ATTEMPTS, "mode": "standard"},
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


def read_object(client, bucket: str, key: str) -> bytes:
    """The whole body of an object; a body cut short (a reset connection, a read timeout) is fetched again (the
    request itself is retried by the client). So is an error answer (a 404 NoSuchKey) whose body was cut: for a
    streaming operation such as GetObject, botocore reads an error's body outside its retry handling, and the
    connection error escapes as urllib3's ProtocolError."""
    from botocore.exceptions import IncompleteReadError, ReadTimeoutError, ResponseStreamingError
    from urllib3.exceptions import ProtocolError
    from urllib3.exceptions import ReadTimeoutError as Urllib3ReadTimeoutError

    cut = (ResponseStreamingError, IncompleteReadError, ReadTimeoutError, ProtocolError, Urllib3ReadTimeoutError)
    for attempt in range(1, BODY_ATTEMPTS):
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except cut as err:
            log.info("reading s3://%s/%s was cut short (%s); reading it again", bucket, key, type(err).__name__)
            time.sleep(min(0.2 * 2**attempt, 5))
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def sha256_base64(hex_digest: str) -> str:
    """A hex SHA-256 as S3's ChecksumSHA256 writes it."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def split_s3(uri: str) -> tuple[str, str]:
    """s3://bucket/a/b -> ('bucket', 'a/b')."""
    parts = urlsplit(uri)
    return parts.netloc, parts.path.strip("/")


def explain(err: Exception, where: str, endpoint: str | None) -> StorageError:
    """One line for a boto3 failure at `where`: what went wrong and what to change."""
    from botocore import exceptions as bex

    at = endpoint or "AWS"
    if isinstance(err, bex.NoCredentialsError | bex.PartialCredentialsError):
        return StorageError(
            f"no AWS credentials for {where}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an "
            "instance role"
        )
    if isinstance(err, bex.EndpointConnectionError | bex.ConnectionClosedError | bex.ReadTimeoutError):
        return StorageError(
            f"cannot reach the S3 endpoint {at} for {where}: check storage.endpoint_url / R1_S3_ENDPOINT_URL and "
            "that the server is up"
        )
    if isinstance(err, bex.ClientError):
        code = err.response.get("Error", {}).get("Code", "?")
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return StorageError(f"bucket of {where} does not exist at {at}: create it or fix storage.uri")
        if code == "404":  # a HEAD, or a server that is not S3: no error code in the body
            return StorageError(
                f"{at} answered HTTP 404 for {where} without an S3 error: check that the bucket exists and that "
                "storage.endpoint_url is an S3 server"
            )
        if status == 403 or code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
            return StorageError(
                f"S3 at {at} refused the credentials for {where} ({code}): check AWS_ACCESS_KEY_ID / AWS_PROFILE "
                "and their permissions on the bucket"
            )
        return StorageError(f"S3 at {at} answered {code} for {where}")
    return StorageError(f"S3 at {at} failed for {where}: {' '.join(str(err).split())}")


class S3Store(ArtifactStore):
    def __init__(self, cfg: StorageConfig, cache_dir: Path | None = None):
        from boto3.s3.transfer import TransferConfig

        self.bucket, self.prefix = split_s3(cfg.uri)
        self.endpoint_url = cfg.endpoint_url
        self.root_uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.client = s3_client(cfg.endpoint_url)
        self.cleanup_client = s3_client(cfg.endpoint_url, preflight=True)  # best effort: no long retries
        chunk = cfg.multipart_threshold_mb * MB
        self.transfer = TransferConfig(multipart_threshold=chunk, multipart_chunksize=chunk)
        self.cache = ArtifactCache(cache_dir or cache_root(), int(cfg.cache_max_gb * (1 << 30)))

    def key(self, relative: str, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, check_relative(relative), *parts) if p)

    def uri_for(self, relative: str) -> str:
        return f"s3://{self.bucket}/{self.key(relative)}"

    @contextlib.contextmanager
    def _errors(self, where: str, missing: str | None = None):
        """boto3 failures as one-line StorageErrors; `missing` is the message for an object that is not there."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as err:
            if missing and err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise StorageError(missing) from None
            raise explain(err, where, self.endpoint_url) from None
        except BotoCoreError as err:
            raise explain(err, where, self.endpoint_url) from None
        except Boto3Error as err:  # S3UploadFailedError wraps the ClientError that says why
            raise explain(err.__context__ or err, where, self.endpoint_url) from None

    def check(self) -> None:
        """Preflight: the bucket exists, the credentials are accepted and may write (a probe object), in seconds."""
        client = s3_client(self.endpoint_url, preflight=True)
        with self._errors(self.root_uri):
            client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)  # HEAD would hide the code
            probe = "/".join(p for p in (self.prefix, f".probe-{attempt_id()}") if p)
            client.put_object(Bucket=self.bucket, Key=probe, Body=b"")
            client.delete_object(Bucket=self.bucket, Key=probe)

    def work_path(self, relative: str) -> Path:
        """A local folder for the stage to write into (it becomes the output's cache entry once published)."""
        return self.cache.root.parent / "work" / f"{check_relative(relative)}.partial"

    def publish(self, work: Path, relative: str, meta: dict) -> Artifact:
        """Upload `work` under a fresh attempt prefix, check every object the server holds against the stamp, then
        PUT the stamp; `work` becomes the cache entry. A failed attempt's objects and multipart uploads are removed."""
        objects = f".attempts/{attempt_id()}"
        stamp = stamp_record(work, self.uri_for(relative), meta, objects)
        attempt = self.key(relative, objects)
        try:
            with self._errors(stamp.record.uri):
                for name in stamp.files:
                    self.client.upload_file(
                        str(work / name), self.bucket, f"{attempt}/{name}", Config=self.transfer, ExtraArgs=SHA256
                    )
                self._verify_uploaded(attempt, stamp)
                self._abort_uploads(attempt)
                self.client.put_object(
                    Bucket=self.bucket, Key=self.key(relative, STAMP), Body=stamp.model_dump_json(indent=2)
                )
        except BaseException:
            self._abort_uploads(attempt, failed=True)
            self._discard(attempt)
            raise
        log.info("published %s (%d files, %d bytes)", stamp.record.uri, len(stamp.files), stamp.size)
        if self.cache.get(stamp.record.fingerprint) is None:
            self.cache.commit(work, stamp)
        else:
            shutil.rmtree(work, ignore_errors=True)
        return stamp.record

    def _verify_uploaded(self, prefix: str, stamp: Stamp | Pushed, names=None) -> None:
        """Every file of `stamp` (or those `names`) is under `prefix` with its size and, where the server gives a
        whole-object SHA-256 (single-part uploads), that checksum: else a CorruptObjectError and no stamp."""
        for name in names if names is not None else stamp.files:
            entry, uri = stamp.files[name], f"s3://{self.bucket}/{prefix}/{name}"
            head = self.client.head_object(Bucket=self.bucket, Key=f"{prefix}/{name}", ChecksumMode="ENABLED")
            checksum = head.get("ChecksumSHA256")
            whole = entry.size < self.transfer.multipart_threshold and checksum and "-" not in checksum
            if head["ContentLength"] != entry.size or (whole and checksum != sha256_base64(entry.sha256)):
                raise CorruptObjectError(
                    f"{uri} as stored differs from the uploaded file (size or SHA-256): the attempt is discarded; "
                    "run the stage again"
                )

    def _discard(self, prefix: str) -> None:
        """Best effort: the objects of a failed publish attempt (clean_attempts removes what is left)."""
        try:
            pages = self.cleanup_client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            keys = [{"Key": item["Key"]} for page in pages for item in page.get("Contents", [])]
            for i in range(0, len(keys), 1000):
                batch = {"Objects": keys[i : i + 1000], "Quiet": True}
                self.cleanup_client.delete_objects(Bucket=self.bucket, Delete=batch)
        except Exception as err:  # noqa: BLE001 - the failure of the publish itself is what is raised
            log.warning("could not remove the failed attempt s3://%s/%s: %s", self.bucket, prefix, err)

    def _abort_uploads(self, prefix: str, failed: bool = False) -> None:
        """Abort the multipart uploads left under `prefix`: a failed upload, or one whose CreateMultipartUpload
        answer was lost (the retried request started another). Best effort (few retries once the attempt `failed`):
        a failure is logged."""
        client = self.cleanup_client if failed else self.client
        try:
            for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix):
                for upload in page.get("Uploads", []):
                    client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                    log.info("aborted the unfinished multipart upload of s3://%s/%s", self.bucket, upload["Key"])
        except Exception as err:  # noqa: BLE001 - cleanup must not hide the outcome of the upload itself
            log.warning("could not abort multipart uploads under s3://%s/%s: %s", self.bucket, prefix, err)

    def put_text(self, relative: str, text: str) -> str:
        uri = self.uri_for(relative)
        with self._errors(uri):
            self.client.put_object(Bucket=self.bucket, Key=self.key(relative), Body=text.encode())
        return uri

    def get_text(self, uri: str) -> str:
        if not uri.startswith("s3://"):
            return super().get_text(uri)
        bucket, key = split_s3(uri)
        with self._errors(uri, missing=f"{uri} does not exist: write it with put_text first"):
            return read_object(self.client, bucket, key).decode()

    def _get_json(self, bucket: str, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return read_object(self.client, bucket, key)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise

    def read_stamp(self, uri: str) -> Stamp | None:
        if not uri.startswith("s3://"):
            return super().read_stamp(uri)
        bucket, key = split_s3(uri)
        with self._errors(uri):
            body = self._get_json(bucket, f"{key}/{STAMP}")
        try:
            return Stamp.model_validate_json(body) if body is not None else None
        except ValueError:
            raise StorageError(
                f"{uri}/{STAMP} is not a valid stamp: delete that output so its stage runs again"
            ) from None

    def local_copy(self, record: Artifact, full: bool = True) -> Path:
        """The cached folder of `record` (no request when cached), else downloaded and checked file by file."""
        if not record.uri.startswith("s3://"):
            return super().local_copy(record, full)
        cached = self.cache.get(record.fingerprint)
        if cached is not None:
            return cached
        stamp = self.read_stamp(record.uri)
        if stamp is None:
            raise StorageError(f"{record.uri} is not stamped (unfinished or deleted): run its stage again")
        if stamp.record.fingerprint != record.fingerprint:
            raise StorageError(
                f"{record.uri} now holds fingerprint {stamp.record.fingerprint}, not the record's "
                f"{record.fingerprint}: run the stages that read it again"
            )
        return self._download(record.uri, stamp)

    def _download(self, uri: str, stamp: Stamp) -> Path:
        bucket, key = split_s3(uri)
        work = self.cache.new_entry(stamp.record.fingerprint)
        try:
            for name, entry in stamp.files.items():
                target = work / name
                target.parent.mkdir(parents=True, exist_ok=True)
                object_uri = f"s3://{bucket}/{key}/{stamp.objects}/{name}"
                gone = f"{object_uri} is missing: delete that output so its stage runs again"
                with self._errors(object_uri, missing=gone):
                    self.client.download_file(
                        bucket, f"{key}/{stamp.objects}/{name}", str(target), Config=self.transfer
                    )
                check_file(target, entry, object_uri)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        log.info("downloaded %s (%d bytes) into the cache", uri, stamp.size)
        return self.cache.commit(work, stamp)

    def _keys(self, prefix: str):
        """(key, size, last_modified) of every object under `prefix`."""
        with self._errors(f"s3://{self.bucket}/{prefix}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"], item["Size"], item["LastModified"]

    def _manifest(self, relative: str) -> dict[str, FileEntry] | None:
        uri = f"{self.uri_for(relative)}/{PUSHED}"
        with self._errors(uri):
            body = self._get_json(self.bucket, self.key(relative, PUSHED))
        if body is None:
            return None
        try:
            return dict(Pushed.model_validate_json(body).files)
        except ValueError:
            raise CorruptObjectError(f"{uri} is not a valid manifest (damaged): that folder is refused") from None

    def push_dir(self, local: Path, relative: str) -> None:
        """Mirror the finished folder `local` (a TRL checkpoint-N) to the work area `relative`: new or changed
        files only, each checked on the server; its manifest is removed while files change and PUT last, so a pull
        sees whole folders only."""
        _, files = manifest(local)
        try:
            before = self._manifest(relative) or {}
        except CorruptObjectError:
            before = {}
        changed = [name for name, entry in files.items() if before.get(name) != entry]
        if not changed and set(before) == set(files):
            return
        pushed, prefix = Pushed(files=files), self.key(relative)
        try:
            with self._errors(self.uri_for(relative)):
                self.client.delete_object(Bucket=self.bucket, Key=self.key(relative, PUSHED))
                for name in changed:
                    self.client.upload_file(
                        str(local / name), self.bucket, f"{prefix}/{name}", Config=self.transfer, ExtraArgs=SHA256
                    )
                self._verify_uploaded(prefix, pushed, changed)
                self._abort_uploads(prefix + "/")
                self.client.put_object(Bucket=self.bucket, Key=f"{prefix}/{PUSHED}", Body=pushed.model_dump_json())
        except BaseException:
            self._abort_uploads(prefix + "/", failed=True)
            raise
        log.info("pushed %d of %d files of %s to %s", len(changed), len(files), local, self.uri_for(relative))

    def pull_dir(self, relative: str, local: Path) -> bool:
        """Bring the pushed folder `relative` into `local` (files already there and intact are kept), each file
        checked against the manifest (CorruptObjectError naming the object); False when nothing complete was
        pushed there."""
        files = self._manifest(relative)
        if files is None:
            return False
        for name, entry in files.items():
            target = local / name
            if target.is_file() and target.stat().st_size == entry.size and file_sha256(target) == entry.sha256:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with self._errors(f"{self.uri_for(relative)}/{name}"):
                self.client.download_file(self.bucket, self.key(relative, name), str(target), Config=self.transfer)
            check_file(target, entry, f"{self.uri_for(relative)}/{name}", fix=CHECKPOINT_FIX)
        return True

    def list_dirs(self, relative: str) -> list[str]:
        """Names of the completely pushed folders (their manifest is there) directly under `relative`."""
        base = self.key(relative) + "/"
        return sorted(
            {key[len(base) :].split("/")[0] for key, _, _ in self._keys(base) if key.endswith(f"/{PUSHED}")} - {PUSHED}
        )

    def remove(self, relative: str) -> None:
        """Delete every object under `relative` (an output, its attempts, or a work area)."""
        self.remove_keys([key for key, _, _ in self._keys(self.key(relative) + "/")])

    def remove_keys(self, keys: list[str]) -> None:
        with self._errors(f"s3://{self.bucket}/{self.prefix}"):
            for i in range(0, len(keys), 1000):
                batch = [{"Key": key} for key in keys[i : i + 1000]]
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def clean_attempts(self, relative: str, older_than_s: float = 3600) -> int:
        """Delete the objects of attempts the stamp does not name (failed or superseded publishes) whose newest
        object is older than `older_than_s` (a writer may still be uploading a younger one). Returns how many."""
        from datetime import UTC, datetime

        stamp = self.read_stamp(self.uri_for(relative))
        base, newest = self.key(relative, ".attempts") + "/", {}
        for key, _, modified in self._keys(base):
            attempt = key[len(base) :].split("/")[0]
            newest.setdefault(attempt, []).append((key, modified))
        now, removed = datetime.now(UTC), 0
        for attempt, objects in newest.items():
            current = stamp is not None and stamp.objects == f".attempts/{attempt}"
            if current or (now - max(m for _, m in objects)).total_seconds() < older_than_s:
                continue
            with self._errors(self.uri_for(relative)):
                self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k, _ in objects], "Quiet": True}
                )
            removed += len(objects)
        return removed
