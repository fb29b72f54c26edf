"""Retrying HTTP JSON calls for the live backends (MediaWiki, SerpAPI), built on tenacity.

A fault worth retrying (timeout, refused connection, HTTP 429 or 5xx, a body that is not JSON) is
retried with exponential backoff, honouring a 429's ``Retry-After``; what survives the retries is a
``ToolFault`` whose message the tool records as ``Observation.error``. Secrets (the SerpAPI key) are
scrubbed from every message because requests puts the full URL, query string included, in its errors.
"""
from __future__ import annotations

import email.utils
import json
import time
from typing import Callable, Iterable, Optional

import requests
import tenacity

from .base import ToolConfig


class ToolFault(RuntimeError):
    """A backend failure that survived the retries (or is not worth retrying, e.g. HTTP 401)."""


class RetryableFault(ToolFault):
    def __init__(self, message: str, retry_after: Optional[float] = None):
        super().__init__(message)
        self.retry_after = retry_after


def redact(text: str, secrets: Iterable[Optional[str]]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """``Retry-After`` is either delta-seconds or an HTTP date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _wait(config: ToolConfig) -> Callable[[tenacity.RetryCallState], float]:
    backoff = tenacity.wait_exponential(multiplier=config.backoff_s, max=config.max_wait_s)

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableFault) and exc.retry_after is not None:
            return min(exc.retry_after, config.max_wait_s)
        return backoff(state)

    return wait


def call_with_retries(fn: Callable[[], object], config: ToolConfig, secrets: Iterable[Optional[str]] = ()):
    """Run ``fn`` (which raises RetryableFault for transient faults) under the config's retry policy."""
    secrets = list(secrets)
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(RetryableFault),
        stop=tenacity.stop_after_attempt(config.retries + 1),
        wait=_wait(config),
        reraise=True,
    )
    try:
        return retrying(fn)
    except RetryableFault as e:
        raise ToolFault(redact(f"{e} (after {config.retries + 1} attempts)", secrets)) from None
    except ToolFault as e:
        raise ToolFault(redact(str(e), secrets)) from None


def response_json(response: requests.Response, what: str) -> dict:
    """Classify an HTTP response: JSON dict, retryable fault, or final fault."""
    status = response.status_code
    if status == 429:
        raise RetryableFault(f"{what}: HTTP 429 Too Many Requests",
                             parse_retry_after(response.headers.get("Retry-After")))
    if status >= 500:
        raise RetryableFault(f"{what}: HTTP {status}")
    try:
        data = response.json()
    except (ValueError, json.JSONDecodeError):
        if status >= 400:
            raise ToolFault(f"{what}: HTTP {status}") from None
        raise RetryableFault(f"{what}: malformed JSON response (HTTP {status})") from None
    if not isinstance(data, dict):
        raise RetryableFault(f"{what}: malformed JSON response (not an object)")
    if status >= 400:
        detail = data.get("error")
        detail = detail.get("info") if isinstance(detail, dict) else detail
        raise ToolFault(f"{what}: HTTP {status}" + (f": {detail}" if detail else ""))
    return data


def get_json(get: Callable[[], requests.Response], config: ToolConfig, what: str,
             secrets: Iterable[Optional[str]] = ()) -> dict:
    """``get()`` performs one HTTP request; network errors become retryable faults."""

    def attempt() -> dict:
        try:
            response = get()
        except requests.Timeout:
            raise RetryableFault(f"{what}: timed out after {config.timeout_s:g} s") from None
        except requests.ConnectionError as e:
            raise RetryableFault(f"{what}: connection failed ({type(e).__name__}: {e})") from None
        except requests.RequestException as e:
            raise ToolFault(f"{what}: {type(e).__name__}: {e}") from None
        return response_json(response, what)

    return call_with_retries(attempt, config, secrets)
