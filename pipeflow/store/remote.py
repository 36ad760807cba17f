"""What a store on an object store (``s3://``, ``gs://``, ``az://``) does differently from a folder.

:class:`~pipeflow.store.artifacts.ArtifactStore` asks this module, so the policy is in one place:

- **Client defaults for S3** (each one yields to the user's ``storage_options`` and to botocore's
  own environment variables): a 5 s connect timeout and 3 attempts in all in botocore's
  ``standard`` retry mode (``AWS_MAX_ATTEMPTS`` / ``AWS_RETRY_MODE`` win when set), so an endpoint that is
  down fails in seconds, not after a minute of retries; and **no listing cache**: other machines
  write the same store, and s3fs's cached listing of a folder would hide their files for the life
  of the process (the registry, taking the next free version number, would then retry a number
  that is taken for ever, and ``exists`` would answer from the stale listing).
- **No folders**: an object store's keys are flat, so nothing is created for a folder (s3fs's
  ``makedirs`` on a missing bucket *creates the bucket*, somewhere, with default settings: a typo
  in ``store.root`` must be an error, not a new bucket). A write is one PUT, which an object store
  makes visible whole or not at all, so there is no ``tmp/`` file and no copy.
- **The bucket is probed once** when a store is opened (a ``HEAD`` of the bucket), so a missing
  bucket, missing or refused credentials and an unreachable endpoint are one line naming the URL
  and the fix before anything runs, not a traceback (or, worse, a registry that reads as empty).
  :func:`explain` words the same problems when they happen later, mid-operation.
- **Exclusive create** (registry numbers, run locks) on S3 is S3's conditional write: a PUT with
  ``If-None-Match: *`` (s3fs ``open(path, "xb")``), which the server refuses with ``412
  Precondition Failed`` when the key exists, so of concurrent writers exactly one wins. AWS S3
  has honoured it since August 2024, as do MinIO and moto; an S3-compatible server that ignores
  the header would let the last writer win silently, so check yours before sharing a registry on
  it. Other object stores (``gs://``, ``az://``: their fsspec backends offer no portable
  exclusive create) keep the check-then-write of
  :meth:`ArtifactStore.create_exclusive`, which leaves a small race window between the check and
  the write.
"""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import urlsplit

#: object stores: flat key spaces where a PUT is atomic and folders do not exist
FLAT = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})
#: backends whose exclusive create is a conditional write (If-None-Match: *)
CONDITIONAL = frozenset({"s3", "s3a"})


def protocols(fs: Any) -> tuple[str, ...]:
    proto = fs.protocol
    return tuple(proto) if isinstance(proto, (tuple, list)) else (proto,)


def client_options(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` for fsspec with pipeflow's defaults under them (S3 only; see the docstring)."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in CONDITIONAL:
        return options
    # a new dict each time: botocore writes into the retries dict it is given
    config: dict[str, Any] = {"connect_timeout": 5}
    if not (os.environ.get("AWS_MAX_ATTEMPTS") or os.environ.get("AWS_RETRY_MODE")):
        config["retries"] = {"total_max_attempts": 3, "mode": "standard"}
    config.update(options.get("config_kwargs") or {})
    return {"use_listings_cache": False, **options, "config_kwargs": config}


def probe(fs: Any, root: str, url: str, options: dict[str, Any]) -> str | None:
    """Why the store at ``url`` cannot be used (one line), or None when its bucket answers."""
    if not set(protocols(fs)) & CONDITIONAL:
        return None
    bucket = root.strip("/").split("/", 1)[0]
    try:
        fs.call_s3("head_bucket", Bucket=bucket)
    except Exception as err:  # botocore and s3fs raise their own types
        return explain(err, url, options)
    return None


def create_exclusive(fs: Any, path: str, data: bytes) -> bool:
    """Write ``path`` with a conditional PUT; False when the key exists (412), True when written.

    A ``409 ConditionalRequestConflict`` (AWS: another conditional write of this key is in
    flight) is retried: the next try sees the winner's object and returns False."""
    for attempt in range(6):
        try:
            with fs.open(path, "xb") as fh:
                fh.write(data)
            return True
        except FileExistsError:
            return False
        except OSError as err:
            code = _code(err)
            if code in ("PreconditionFailed", "412"):
                return False
            if code not in ("ConditionalRequestConflict", "409") or attempt == 5:
                raise
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def explain(err: BaseException, url: str, options: dict[str, Any], doing: str = "") -> str:
    """One line: the store URL, what failed and what to fix."""
    where = f"store {url}: " + (f"{doing}: " if doing else "")
    names = {type(e).__name__ for e in _chain(err)}
    code = _code(err)
    bucket = urlsplit(url).netloc
    if names & {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}:
        return (
            f"{where}no credentials found for S3: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE) in the environment; the spec never holds them"
        )
    if names & {"EndpointConnectionError", "ConnectTimeoutError", "ProxyConnectionError"}:
        return (
            f"{where}cannot reach the S3 endpoint {_endpoint(err, options)}: is it running? "
            f"It comes from {_endpoint_source(options)}"
        )
    if code in ("NoSuchBucket", "404") or (
        isinstance(err, FileNotFoundError) and "bucket" in str(err).lower()
    ):
        return (
            f"{where}bucket '{bucket}' does not exist: create it (aws s3 mb s3://{bucket}) "
            "or correct the store URL "
            "(store.root, $PIPEFLOW_STORE__ROOT, --store or $PIPEFLOW_STORE)"
        )
    if code in _DENIED or isinstance(err, PermissionError):
        return (
            f"{where}access denied ({code or 'Forbidden'}): check the credentials in the "
            "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and that "
            f"they may read and write bucket '{bucket}'"
        )
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return f"{where}{type(err).__name__}: {text}".replace("\n", " ")


_DENIED = frozenset(
    {
        "403",
        "AccessDenied",
        "Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
    }
)


def _chain(err: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: BaseException | None = err
    while seen is not None and seen not in out:
        out.append(seen)
        seen = seen.__cause__ or seen.__context__
    return out


def _code(err: BaseException) -> str | None:
    """The S3 error code (``NoSuchBucket``, ``412``...) of a botocore error in ``err``'s chain."""
    for e in _chain(err):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if code:
                return str(code)
    return None


def _endpoint(err: BaseException, options: dict[str, Any]) -> str:
    for e in _chain(err):
        found = (getattr(e, "kwargs", None) or {}).get("endpoint_url")
        if found:
            parts = urlsplit(str(found))
            return f"{parts.scheme}://{parts.netloc}"
    return _configured_endpoint(options) or "(AWS default)"


def _configured_endpoint(options: dict[str, Any]) -> str | None:
    return (
        (options.get("client_kwargs") or {}).get("endpoint_url")
        or options.get("endpoint_url")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )


def _endpoint_source(options: dict[str, Any]) -> str:
    if (options.get("client_kwargs") or {}).get("endpoint_url") or options.get("endpoint_url"):
        return "the store's storage_options (client_kwargs.endpoint_url)"
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(name):
            return f"${name}"
    return "AWS's default for the region: set AWS_ENDPOINT_URL_S3 for another S3 server"


def modified(info: dict[str, Any]) -> float:
    """A remote listing entry's modification time; unknown reads as now."""
    for key in ("LastModified", "mtime", "last_modified", "updated", "created"):
        value = info.get(key)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return time.time()
