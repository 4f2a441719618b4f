"""Reads for cases, scans and slices, always limited to what the user may see (accounts.permissions).

``*_list_visible`` return querysets (empty when the user may see nothing); ``*_get_visible`` raise Http404 for
records of other organizations as for missing ones, so that ids of other organizations cannot be probed.
"""

from __future__ import annotations

import uuid

from django.db.models import QuerySet
from django.http import Http404

from accounts.models import User
from accounts.permissions import user_can_read
from scans.models import Case, Scan, Slice


def case_list_visible(*, user: User) -> QuerySet[Case]:
    """Cases of the user's organization (every role that may read sees all of them)."""
    if not user_can_read(user):
        return Case.objects.none()
    return Case.objects.filter(organization_id=user.organization_id).select_related("owner")


def scan_list_visible(*, user: User) -> QuerySet[Scan]:
    if not user_can_read(user):
        return Scan.objects.none()
    return Scan.objects.filter(case__organization_id=user.organization_id).select_related("case")


def slice_list_visible(*, user: User) -> QuerySet[Slice]:
    if not user_can_read(user):
        return Slice.objects.none()
    return Slice.objects.filter(scan__case__organization_id=user.organization_id).select_related("scan__case")


def _get(queryset: QuerySet, pk: uuid.UUID | str):
    try:
        return queryset.get(pk=pk)
    except (queryset.model.DoesNotExist, ValueError, TypeError) as exc:
        raise Http404("Not found.") from exc
    except Exception as exc:  # a malformed UUID string raises ValidationError
        from django.core.exceptions import ValidationError

        if isinstance(exc, ValidationError):
            raise Http404("Not found.") from exc
        raise


def case_get_visible(*, user: User, case_id: uuid.UUID | str) -> Case:
    return _get(case_list_visible(user=user), case_id)


def scan_get_visible(*, user: User, scan_id: uuid.UUID | str) -> Scan:
    return _get(scan_list_visible(user=user), scan_id)


def slice_get_visible(*, user: User, slice_id: uuid.UUID | str) -> Slice:
    return _get(slice_list_visible(user=user), slice_id)


def case_scans(*, case: Case) -> QuerySet[Scan]:
    """A case's scans, newest first, with their slices prefetched in order."""
    return case.scans.prefetch_related("slices").order_by("-created")
