"""Options parsed by a table: each option has a name, a parser, a default and a doc.

URL query values arrive as strings and keyword arguments as Python values; both go
through the same parser, and a bad value names the option and what it expects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import ConfigurationError

__all__ = ["Option", "choice", "int_in_range", "non_empty_str", "non_negative_int",
           "optional_str", "parse_bool", "positive_float", "positive_int", "redact",
           "resolve", "text"]


@dataclass(frozen=True)
class Option:
    """One option of a table: its name, the parser of its value (which raises
    ``ValueError`` or ``TypeError`` with what it expects), its default and a line of
    documentation."""

    name: str
    parse: Callable[[Any], Any]
    default: Any
    doc: str


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true/false")


def positive_float(value: Any) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("expected a number > 0")
    return number


def positive_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number > 0")
    number = int(value)
    if number <= 0:
        raise ValueError("expected a whole number > 0")
    return number


def non_negative_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number >= 0")
    number = int(value)
    if number < 0:
        raise ValueError("expected a whole number >= 0")
    return number


def int_in_range(low: int, high: int, what: str = "a whole number") -> Callable[[Any], int]:
    """A parser of whole numbers from ``low`` to ``high``."""
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"expected {what} from {low} to {high}")
        number = int(value)
        if not low <= number <= high:
            raise ValueError(f"expected {what} from {low} to {high}")
        return number
    return parse


def non_empty_str(value: Any) -> str:
    text = str(value)
    if not text:
        raise ValueError("expected a non-empty string")
    return text


def optional_str(value: Any) -> str | None:
    return None if value is None else non_empty_str(value)


def text(value: Any) -> str:
    return str(value)


def choice(*allowed: str, fold: Callable[[str], str] | None = None
           ) -> Callable[[Any], str]:
    """A parser that accepts one of ``allowed`` (after ``fold``, e.g. ``str.upper``,
    and stripping blanks when folding)."""
    def parse(value: Any) -> str:
        text = str(value)
        if fold is not None:
            text = fold(text.strip())
        if text not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return text
    return parse


def resolve(
    table: Iterable[Option], given: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """Parse ``given`` against ``table``; unknown names and bad values raise."""
    options = {opt.name: opt for opt in table}
    result = {name: opt.default for name, opt in options.items()}
    for name, raw in given.items():
        opt = options.get(name)
        if opt is None:
            known = ", ".join(sorted(options)) or "none"
            raise ConfigurationError(f"unknown option {name!r} for {where} (known: {known})")
        try:
            result[name] = opt.parse(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"bad value {raw!r} for option {name!r} of {where}: {exc}") from None
    return result


_TOKEN_SCHEMES = frozenset({"nats", "tls"})
"""Schemes whose user part alone (``nats://TOKEN@host``) is a secret: a token."""
_SECRET_PARAMETERS = frozenset({"password", "sslpassword", "token"})
"""Query parameters that hold secrets."""


def redact(url: str) -> str:
    """The URL with any password (or token, or secret query parameter) replaced by
    ``***``, for logs and errors."""
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return "<unparsable url>"
    if not parts.netloc and not query:
        return url  # nothing secret in it (memory://, local:///folder): as written
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if parts.password is not None:
        userinfo = f"{parts.username or ''}:***"
    elif at and parts.scheme.lower() in _TOKEN_SCHEMES:
        userinfo = "***"
    if any(name in _SECRET_PARAMETERS for name, _ in query):
        parts = parts._replace(query=urlencode(
            [(name, "***" if name in _SECRET_PARAMETERS else value)
             for name, value in query], safe="*/"))
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{hosts}"))
