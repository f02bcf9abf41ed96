"""What every search engine returns and the errors it raises."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from configs import get_settings

SEARCH_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True)
class SearchResult:
    title: str
    link: str
    snippet: str


class SearchEngineError(RuntimeError):
    """The engine could not be reached or answered nonsense; the message is shown to the user."""


class SearchEngineNotConfigured(SearchEngineError):
    """A key or URL the engine needs is missing from the settings."""


def http_client() -> httpx.Client:
    """An HTTP client that goes through SEARCH_PROXY when one is set."""
    proxy = get_settings().SEARCH_PROXY or None
    return httpx.Client(proxy=proxy, timeout=SEARCH_TIMEOUT_SECONDS, follow_redirects=True)


def get_json(method: str, url: str, **kwargs) -> dict:
    """One request; any failure becomes a SearchEngineError with the reason."""
    try:
        with http_client() as client:
            response = client.request(method, url, **kwargs)
            response.raise_for_status()
            return response.json()
    except httpx.HTTPStatusError as exc:
        raise SearchEngineError(f"HTTP {exc.response.status_code} from {url}")
    except httpx.HTTPError as exc:
        raise SearchEngineError(f"{type(exc).__name__}: {exc}")
    except ValueError as exc:
        raise SearchEngineError(f"{url} did not answer JSON: {exc}")
