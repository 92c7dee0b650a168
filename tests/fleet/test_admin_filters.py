"""Hostile filter values on every admin list: a malformed value is the unfiltered page or
Django's own "?e=1" redirect (invalid filter), never a 500."""

import pytest
from django.contrib import admin
from django.contrib.admin.views.main import ERROR_FLAG
from django.db import transaction
from django.test import RequestFactory
from django.urls import reverse

pytestmark = pytest.mark.django_db

# Values no filter expects: NUL (PostgreSQL refuses it in any text), a digit int() refuses,
# words where ids or choices go, a number past bigint, a LIKE wildcard.
HOSTILE = ["\x00", "a\x00b", "²", "nonsense", "9" * 30, "%"]
# Parameters of every list, whatever its filters: the issue's own examples among them.
ANY_LIST = [
    ("customer__id__exact", "²"),
    ("customer__id__exact", "\x00"),
    ("status", "\x00"),
    ("status__exact", "nonsense"),
    ("status__exact", "\x00"),
    ("q", "\x00"),
    ("q", "a\x00b"),
    ("o", "\x00"),
    ("o", "99"),
    ("p", "\x00"),
    ("p", "²"),
    ("e", "\x00"),
    ("\x00", "1"),
    ("id__in", "1,\x00"),
    ("_changelist_filters", "\x00"),
]

CHANGELISTS = sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label)


def hostile_params(model_admin, user):
    """The list's own filter parameters (what its sidebar sends), each with each hostile
    value, and the date hierarchy's, after the ones every list gets."""
    request = RequestFactory().get("/")
    request.user = user
    changelist = model_admin.get_changelist_instance(request)
    names = [name for spec in changelist.filter_specs for name in spec.expected_parameters()]
    if model_admin.date_hierarchy:
        names += [f"{model_admin.date_hierarchy}__{part}" for part in ("year", "month", "day")]
    return ANY_LIST + [(name, value) for name in names for value in HOSTILE]


@pytest.mark.parametrize(
    ("model", "model_admin"), CHANGELISTS, ids=[m._meta.label_lower for m, _ in CHANGELISTS]
)
def test_hostile_filter_values_never_break_a_list(staff_client, customer, model, model_admin):
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    broken = []
    for name, value in hostile_params(model_admin, staff_client.user):
        try:
            with transaction.atomic():  # a database error must not spoil the next request
                response = staff_client.get(url, {name: value})
        except Exception as exc:  # the test client re-raises what would be a 500
            broken.append((name, value, f"{type(exc).__name__}: {exc}"[:120]))
            continue
        if response.status_code == 302:
            assert response["Location"] == f"{url}?{ERROR_FLAG}=1", (name, value)
        elif response.status_code != 200:
            broken.append((name, value, response.status_code))
    assert not broken, broken
