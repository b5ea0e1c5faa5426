"""The S3 objects a job reads: listing ``s3://bucket/prefix`` as Cortex did, and opening an
object to read it a line at a time.

boto3 is optional (``batchd[s3]``) and blocking: this runs in the planning thread, never on
the event loop, and imports boto3 only when a job names an ``s3://`` path. Every S3 failure
(no such bucket, access denied, an endpoint that does not answer) becomes a domain error
whose field names the path, so a job is refused whole rather than half-admitted.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from batchd.config import S3Config
from batchd.errors import DomainError, Forbidden, Invalid

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

S3_SCHEME = "s3://"
# Read this much of an object at a time; a line is cut from the buffer.
_READ_CHUNK_BYTES = 1024 * 1024
# Error codes that mean "not allowed", as opposed to "not there" or "not right".
_ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "403",
    }
)


def is_s3_url(path: str) -> bool:
    return path.startswith(S3_SCHEME)


def split_s3_url(url: str, field: str) -> tuple[str, str]:
    """``s3://bucket/key`` as (bucket, key); the key may be empty (the whole bucket)."""
    bucket, _, key = url[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise Invalid(f"{url!r} names no bucket: write s3://bucket/key", field)
    return bucket, key


class S3Objects:
    """One job's view of S3: a client made on first use, from the daemon's ``[s3]``."""

    def __init__(self, config: S3Config) -> None:
        self._config = config
        self._client: S3Client | None = None

    def list(self, url: str, field: str) -> Iterator[str]:
        """The ``s3://bucket/key`` URL of each object whose key starts with ``url``'s key,
        in key order; folder markers (keys ending in ``/``) are skipped, as Cortex did."""
        bucket, prefix = split_s3_url(url, field)
        # Making the client reads the daemon's AWS config: a bad one (AWS_PROFILE naming
        # no profile, say) is a refusal naming the path too.
        with _s3_errors(url, field):
            client = self._connect(field)
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for page in pages:
                for entry in page.get("Contents", ()):
                    key = entry["Key"]
                    if not key.endswith("/"):
                        yield f"{S3_SCHEME}{bucket}/{key}"

    def open(self, url: str, field: str) -> BinaryIO:
        """The object at ``url``, buffered, so ``readline(limit)`` reads a line at a time."""
        bucket, key = split_s3_url(url, field)
        with _s3_errors(url, field):
            body = self._connect(field).get_object(Bucket=bucket, Key=key)["Body"]
        return io.BufferedReader(_ObjectStream(body, url, field), _READ_CHUNK_BYTES)

    def _connect(self, field: str) -> S3Client:
        if self._client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError:
                raise Invalid(
                    "s3:// paths need boto3, which is not installed with this daemon: "
                    "install batchd[s3] (pip install 'batchd[s3]')",
                    field,
                ) from None
            settings = Config(
                connect_timeout=10,
                read_timeout=60,
                retries={"mode": "standard", "max_attempts": 3},
            )
            try:
                self._client = boto3.session.Session().client(
                    "s3",
                    endpoint_url=self._config.endpoint_url,
                    region_name=self._config.region,
                    config=settings,
                )
            except ValueError as exc:
                # botocore's plain ValueError for an endpoint it cannot use: [s3] endpoint_url
                # is checked at start, but $AWS_ENDPOINT_URL or a profile's is not.
                raise Invalid(f"the daemon's S3 endpoint cannot be used: {exc}", field) from exc
        return self._client


class _ObjectStream(io.RawIOBase):
    """An object's body as a raw stream, for io.BufferedReader; read errors are refusals."""

    def __init__(self, body: Any, url: str, field: str) -> None:
        self._body = body
        self._url = url
        self._field = field

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with _s3_errors(self._url, self._field):
            data: bytes = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


@contextlib.contextmanager
def _s3_errors(url: str, field: str) -> Iterator[None]:
    """Turns botocore's exceptions into domain errors naming ``url`` and ``field``."""
    try:
        yield
    except DomainError:
        raise
    except Exception as exc:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        if isinstance(exc, ClientError):
            raise _refusal(exc.response, url, field) from exc
        if isinstance(exc, NoCredentialsError):
            raise Forbidden(
                f"cannot read {url}: no AWS credentials found (set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or a credentials file, for the daemon)",
                field,
            ) from exc
        if isinstance(exc, BotoCoreError | OSError):
            raise Invalid(f"cannot read {url}: {exc}", field) from exc
        raise


def _refusal(response: Any, url: str, field: str) -> DomainError:
    error = response.get("Error", {})
    code = str(error.get("Code", ""))
    said = str(error.get("Message", "")) or code
    if code == "NoSuchBucket":
        bucket = url[len(S3_SCHEME) :].partition("/")[0]
        return Invalid(f"cannot read {url}: bucket {bucket!r} does not exist", field)
    if code in ("NoSuchKey", "404"):
        return Invalid(f"cannot read {url}: no such object", field)
    if code in _ACCESS_CODES:
        return Forbidden(f"cannot read {url}: S3 refused access ({code}: {said})", field)
    return Invalid(f"cannot read {url}: S3 said {code}: {said}", field)
