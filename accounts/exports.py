"""CSV downloads of the audit pages (the prediction list and the audit trail), with the page's filters.

Streamed row by row, so a year of predictions never sits in memory; every download is itself audited
(``data.export``) with its filters and row count. Text a spreadsheet would run as a formula (a patient reference
typed as ``=HYPERLINK(...)``) is written with a leading apostrophe, so opening the file runs nothing.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse, QueryDict, StreamingHttpResponse
from django.utils import timezone

from accounts.models import AuditAction, User
from accounts.services import record_audit_event

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(value: Any) -> Any:
    """``value`` as a CSV cell: None empty, times in ISO 8601 UTC, text that starts a formula defused."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class _Line:
    """csv.writer writes into this and gets the line back, so rows can be yielded one at a time."""

    def write(self, line: str) -> str:
        return line


def export_query(query: QueryDict) -> str:
    """The page's filters as a query string for its export link (the page number dropped)."""
    query = query.copy()
    query.pop("page", None)
    return query.urlencode()


def audit_export_record(
    *, user: User, export: str, filters: dict[str, Any], rows: int, request: HttpRequest | None = None
) -> None:
    """Audit one CSV download: what was exported, with which filters, how many rows."""
    record_audit_event(
        action=AuditAction.EXPORT,
        actor=user,
        request=request,
        details={
            "export": export,
            "filters": {name: str(value) for name, value in filters.items() if value not in ("", None)},
            "rows": rows,
        },
    )


def csv_download(*, name: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> StreamingHttpResponse:
    """A streamed ``text/csv`` attachment named ``<name>-<UTC time>.csv``; the response is never cached."""
    writer = csv.writer(_Line())

    def lines() -> Iterator[str]:
        yield "\ufeff" + writer.writerow(header)  # the byte-order mark makes spreadsheets read UTF-8 as UTF-8
        for row in rows:
            yield writer.writerow([spreadsheet_cell(value) for value in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="{name}-{stamp}.csv"'
    response["Cache-Control"] = "no-store"
    return response


def invalid_filters_response(form: forms.Form) -> HttpResponse:
    """400 in words, naming each wrong filter (the page's export link copies valid filters: this is a typed URL)."""
    problems = "; ".join(f"{form.fields[name].label}: {' '.join(errors)}" for name, errors in form.errors.items())
    return HttpResponse(
        f"The filters are not valid, so nothing was exported. {problems}",
        status=400,
        content_type="text/plain; charset=utf-8",
    )
