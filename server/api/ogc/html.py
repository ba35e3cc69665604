"""The HTML forms of the /ogc resources (OGC API – Features /conf/html): plain pages built
from the same documents as the JSON, every value escaped, no script (the pages' CSP)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

from aiohttp import web

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title></head>
<body>
<nav>{crumbs}</nav>
<h1>{title}</h1>
{body}
</body></html>
"""


def _a(href: str, text: str) -> str:
    return f'<a href="{escape(href)}">{escape(text)}</a>'


def page(title: str, body: str, crumbs: Iterable[tuple[str, str]] = ()) -> web.Response:
    nav = " / ".join(_a(href, text) for text, href in crumbs)
    return web.Response(text=_PAGE.format(title=escape(title), crumbs=nav, body=body),
                        content_type="text/html")


def links(items: Iterable[Mapping[str, Any]]) -> str:
    rows = "".join(
        f"<li>{_a(link['href'], link.get('title') or link['href'])} "
        f"<small>({escape(link['rel'])}, {escape(link.get('type', ''))})</small></li>"
        for link in items)
    return f"<ul>{rows}</ul>"


def value(v: Any) -> str:
    if isinstance(v, Mapping):
        return "; ".join(f"{escape(str(k))}: {value(x)}" for k, x in v.items())
    if isinstance(v, list | tuple):
        return ", ".join(value(x) for x in v)
    return "" if v is None else escape(str(v))


def table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """``rows`` hold HTML already escaped (links or :func:`value`)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def anchor(href: str, text: str) -> str:
    return _a(href, text)


def paragraph(text: str) -> str:
    return f"<p>{escape(text)}</p>"
