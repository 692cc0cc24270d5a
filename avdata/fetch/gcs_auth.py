"""Google Cloud Storage credentials that no retry helps, ended at once: a 401 from the store, and
credentials Google refuses to renew. gcsfs retries both for half a minute to over a minute per command."""

from __future__ import annotations

import json
import os
from typing import Any

from avdata.errors import AvdataError

#: where gcsfs (through google.auth) finds credentials
CREDENTIALS = "GOOGLE_APPLICATION_CREDENTIALS, or `gcloud auth application-default login`"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def renew_credentials(url: str, fs: Any) -> None:
    """Renew gcsfs's Google credentials now if they are due (a no-op while they are valid), and raise an
    AvdataError naming where they come from when Google refuses them (a revoked login, a deleted service
    account key). Inside a request gcsfs turns that refusal into a 401 it retries six times with back-off
    (and its bucket-type look-up over gRPC retries its own for up to 60 s): over a minute per command.
    Any other failure (the token endpoint unreachable) is left to the request, as before."""
    holder: Any = getattr(fs, "credentials", None)
    if getattr(holder, "credentials", None) is None:  # anonymous: nothing to renew
        return
    try:
        holder.maybe_refresh()
    except Exception as exc:
        cause = exc if type(exc).__name__ == "RefreshError" else exc.__cause__
        if cause is None or type(cause).__name__ != "RefreshError":
            return
        detail = cause.args[0] if cause.args and isinstance(cause.args[0], str) else str(cause)
        where, todo = _google_source(holder)
        raise AvdataError(f"{url}: Google refused to renew the credentials from {where} "
                          f"({_one_line(detail)}); {todo}") from exc


def _google_source(holder: Any) -> tuple[str, str]:
    """Where gcsfs's credentials were read from (GOOGLE_APPLICATION_CREDENTIALS, else gcloud's
    application-default file) and what renews them, by their kind."""
    kind = type(holder.credentials).__module__
    named = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if getattr(holder, "method", None) != "google_default":
        return "gcsfs's token cache or the metadata server", f"set {CREDENTIALS}"
    if named:
        where = f"GOOGLE_APPLICATION_CREDENTIALS ({named})"
    else:
        from google.auth import _cloud_sdk

        where = f"gcloud's application-default file ({_cloud_sdk.get_application_default_credentials_path()})"
    if kind.endswith("service_account"):
        return where, ("the service account key may have been deleted or disabled: create a new key "
                       "(`gcloud iam service-accounts keys create`) and point GOOGLE_APPLICATION_CREDENTIALS at it")
    if kind.endswith("oauth2.credentials"):
        again = "run `gcloud auth application-default login` again"
        return where, (f"the login was revoked or has expired: {again}" if not named else
                       f"the login was revoked or has expired: {again}, and unset GOOGLE_APPLICATION_CREDENTIALS "
                       "or point it at the file the login writes")
    return where, f"renew them, or set {CREDENTIALS}"


class Unauthorized(PermissionError):
    """A store's 401: the credentials were refused, which no retry changes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_GCS_TRACE: Any = None


def unauthorized_trace() -> Any:
    """An aiohttp trace (gcsfs's documented `session_kwargs`) that raises `Unauthorized` on a 401. gcsfs
    retries a 401 whose message is "Invalid Credentials" (an expired or revoked token) six times with
    back-off, about 35 s per command, and its retry count is fixed when the class is defined; an
    exception raised here is none of those it retries. One object, so fsspec's cached filesystem is reused."""
    global _GCS_TRACE
    if _GCS_TRACE is None:
        import aiohttp

        async def on_end(session: Any, context: Any, params: Any) -> None:
            if params.response.status == 401:
                body = await params.response.read()  # also hands the connection back
                raise Unauthorized(401, _gcs_message(body))

        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(on_end)
        _GCS_TRACE = trace
    return _GCS_TRACE


def _gcs_message(body: bytes) -> str:
    """The message of a Google JSON error body, or its first 200 characters of text."""
    text = body.decode("utf-8", "replace")
    try:
        error = json.loads(text)["error"]
        return str(error.get("message", "") if isinstance(error, dict) else error)[:200]
    except (ValueError, KeyError, TypeError, AttributeError):
        return text[:200]
