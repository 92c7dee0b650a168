"""A member whose role does not allow a write sees the portal's own 403 page (what role it
takes, whom to ask), also with DEBUG off; controls they cannot use are shown disabled with
the same advice rather than hidden."""

import re

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import include, path, reverse

from fleet.choices import MemberRole
from fleet.models import ActivationToken, Rollout
from tests.portal.conftest import member_client

pytestmark = pytest.mark.django_db

STYLESHEET = re.compile(r'<link rel="stylesheet" href="/static/portal/portal[^"]*\.css">')


def refuse(request):
    raise PermissionDenied("staff only")


# For the test of Django's own 403 handler: the site's URLs and one view that refuses.
urlpatterns = [path("refuse/", refuse), path("", include("config.urls"))]


@pytest.fixture(autouse=True)
def production(settings):
    settings.DEBUG = False


@pytest.fixture
def admin(customer, django_user_model):
    return member_client(customer, django_user_model, MemberRole.ADMIN, "adam")


def test_a_viewer_refused_a_write_gets_the_portals_page(viewer, stocked, customer):
    response = viewer.post(reverse("portal:tokens"), {"count": 1, "expires_in_days": 7})
    page = response.content.decode()
    assert response.status_code == 403
    assert STYLESHEET.search(page)
    assert "This takes an owner or an admin of" in page
    assert "you are a viewer" in page
    assert f"Ask an owner of {customer.name}" in page
    assert 'class="tabs"' in page  # the portal around it, to go on from
    assert ActivationToken.objects.count() == 1


def test_an_admin_who_steers_a_wave_is_told_it_takes_an_owner(admin, stocked, customer):
    rollout = stocked["rollout"]
    response = admin.post(
        reverse("portal:upgrade_steer", args=[rollout.pk, "pause"]), {"note": "hold"}
    )
    page = response.content.decode()
    assert response.status_code == 403
    assert "This takes an owner of" in page
    assert "you are an admin" in page
    assert f"Ask an owner of {customer.name}" in page
    assert STYLESHEET.search(page)
    assert Rollout.objects.get().state == "canary"


@pytest.mark.urls(__name__)
def test_djangos_own_403_uses_the_same_page(viewer):
    response = viewer.get("/refuse/")
    page = response.content.decode()
    assert response.status_code == 403
    assert STYLESHEET.search(page)
    assert "Signed in as vera, you do not have the role this needs" in page
    assert "Ask an owner of your customer" in page


DISABLED_FOR_VIEWERS = [
    ("tokens", "mint-ask", "Owners and admins mint tokens: ask an owner of"),
    ("tokens", "revoke-ask", "Owners and admins revoke tokens: ask an owner of"),
    ("api_keys", "key-ask", "Owners and admins mint and revoke keys: ask an owner of"),
    ("upgrades", "wave-ask", "Owners start upgrade waves: ask an owner of"),
]


@pytest.mark.parametrize(("page", "hint_id", "hint"), DISABLED_FOR_VIEWERS)
def test_a_viewer_sees_the_controls_disabled_with_whom_to_ask(
    viewer, owner, stocked, customer, page, hint_id, hint
):
    html = viewer.get(reverse(f"portal:{page}")).content.decode()
    assert f'<p class="ask-owner" id="{hint_id}">{hint} {customer.name}.</p>' in html
    described = re.findall(rf'<(\w+)[^>]*\bdisabled\b[^>]*aria-describedby="{hint_id}"', html)
    assert described and set(described) <= {"fieldset", "button"}
    owners = owner.get(reverse(f"portal:{page}")).content.decode()
    assert hint not in owners
    assert f'aria-describedby="{hint_id}"' not in owners


def test_an_admin_sees_the_steering_of_a_wave_disabled(admin, owner, stocked, customer):
    url = reverse("portal:upgrade_detail", args=[stocked["rollout"].pk])
    html = admin.get(url).content.decode()
    assert f"Owners steer upgrade waves: ask an owner of {customer.name}." in html
    steer_forms = re.findall(r'<fieldset class="note"([^>]*)>', html)
    assert steer_forms  # pause, abort, skip the soak …
    assert all('disabled aria-describedby="steer-ask"' in attrs for attrs in steer_forms)
    assert "disabled" not in "".join(
        re.findall(r'<fieldset class="note"([^>]*)>', owner.get(url).content.decode())
    )
