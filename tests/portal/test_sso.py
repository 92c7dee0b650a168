"""Single sign-on through a customer's OpenID Connect provider, against a real provider
(oidc-provider-mock, an authlib-based server on a thread: discovery, the authorization
form, the token endpoint, JWKS, userinfo), with just-in-time membership."""

from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import oidc_provider_mock
import pytest
from django.contrib.auth.models import User
from django.test import Client

from fleet.choices import AuditAction, MemberRole
from fleet.models import AuditEvent, Membership, SsoIdentity
from fleet.services.audit import SYSTEM
from fleet.services.customers import membership_set
from fleet.services.sso import customer_sso_set
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def provider() -> Iterator[str]:
    with oidc_provider_mock.run_server_in_thread() as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture
def acme(customer, provider):
    customer_sso_set(
        customer=customer,
        issuer=provider,
        client_id="agentina-acme",
        client_secret="s3cret-from-the-idp",
        default_role=MemberRole.ADMIN,
        enabled=True,
        actor=SYSTEM,
    )
    return customer


def sign_in(client: Client, provider: str, slug: str, sub: str, email: str, *, deny=False):
    """What a browser does: start on the portal, authorize at the provider's own form,
    come back to the callback with its code."""
    assert httpx.put(f"{provider}/users/{sub}", json={"email": email}).status_code == 204
    start = client.get(f"/portal/sso/{slug}/")
    assert start.status_code == 302, start.content
    assert start["Location"].startswith(f"{provider}/oauth2/authorize?")
    form = {"action": "deny"} if deny else {"sub": sub}
    authorized = httpx.post(start["Location"], data=form)
    assert authorized.status_code == 302, authorized.text
    back = urlsplit(authorized.headers["location"])
    assert back.path == "/portal/sso/callback/"
    return client.get(f"{back.path}?{back.query}")


def test_a_first_sign_in_makes_a_member_at_the_chosen_role(acme, provider, client):
    response = sign_in(client, provider, acme.slug, "idp-user-1", "ada@acme.example")
    assert response.status_code == 302
    assert response["Location"] == "/portal/"
    identity = SsoIdentity.objects.get()
    assert (identity.customer, identity.subject, identity.email) == (
        acme,
        "idp-user-1",
        "ada@acme.example",
    )
    user = identity.user
    assert not user.has_usable_password()
    assert Membership.objects.get(user=user).role == MemberRole.ADMIN
    event = AuditEvent.objects.get(action=AuditAction.MEMBERSHIP_CREATE)
    assert event.changes == {"role": [None, "admin"]}
    page = client.get("/portal/")
    assert page.status_code == 200
    assert acme.name in page.content.decode()


def test_signing_in_again_is_the_same_member_with_the_role_owners_gave(acme, provider, client):
    sign_in(client, provider, acme.slug, "idp-user-1", "ada@acme.example")
    user = SsoIdentity.objects.get().user
    membership_set(customer=acme, user=user, role=MemberRole.OWNER, actor=SYSTEM)
    client.logout()
    again = sign_in(Client(), provider, acme.slug, "idp-user-1", "ada@acme.example")
    assert again.status_code == 302 and again["Location"] == "/portal/"
    assert User.objects.filter(sso_identities__isnull=False).count() == 1
    assert Membership.objects.get(user=user).role == MemberRole.OWNER
    assert SsoIdentity.objects.get().last_sign_in_at is not None


def test_a_provider_never_takes_over_a_user_it_did_not_make(acme, provider, client):
    """Matched by subject within the customer, never by the email the provider asserts."""
    staff = User.objects.create_user("root", email="root@agentina.example", is_staff=True)
    sign_in(client, provider, acme.slug, "mallory", "root@agentina.example")
    identity = SsoIdentity.objects.get()
    assert identity.user != staff
    assert not identity.user.is_staff
    assert Membership.objects.filter(user=staff).count() == 0


def test_the_same_subject_at_two_customers_is_two_users(acme, provider, client):
    other = factories.customer(name="Globex")
    customer_sso_set(
        customer=other,
        issuer=provider,
        client_id="agentina-globex",
        client_secret="another",
        default_role=MemberRole.VIEWER,
        enabled=True,
        actor=SYSTEM,
    )
    sign_in(client, provider, acme.slug, "shared-sub", "x@example.com")
    sign_in(Client(), provider, other.slug, "shared-sub", "x@example.com")
    first, second = SsoIdentity.objects.order_by("id")
    assert first.user != second.user
    assert Membership.objects.get(user=second.user).customer == other
    assert Membership.objects.get(user=second.user).role == MemberRole.VIEWER


def test_a_denied_authorization_signs_nobody_in(acme, provider, client):
    response = sign_in(client, provider, acme.slug, "idp-user-2", "b@acme.example", deny=True)
    assert response.status_code == 302
    assert response["Location"].startswith("/portal/login/")
    assert not SsoIdentity.objects.exists()
    assert client.get("/portal/").status_code == 302  # still signed out


def test_a_callback_with_a_state_this_browser_did_not_start_is_refused(acme, provider, client):
    start = client.get(f"/portal/sso/{acme.slug}/")
    assert start.status_code == 302
    authorized = httpx.post(start["Location"], data={"sub": "idp-user-3"})
    back = urlsplit(authorized.headers["location"])
    stranger = Client()  # another browser: no state of its own
    assert stranger.get(f"{back.path}?{back.query}").status_code in (302, 400)
    assert not SsoIdentity.objects.exists()


def test_sso_is_only_for_customers_that_set_it_up(customer, client):
    assert client.get(f"/portal/sso/{customer.slug}/").status_code == 404
    chooser = client.get("/portal/sso/", {"customer": customer.slug})
    assert chooser.status_code == 404
    assert "No single sign-on" in chooser.content.decode()


def test_the_chooser_sends_the_browser_on_to_the_customers_provider(acme, client):
    assert client.get("/portal/sso/").status_code == 200
    chosen = client.get("/portal/sso/", {"customer": acme.slug})
    assert chosen.status_code == 200  # a link on, not a redirect (CSP form-action 'self')
    assert f'href="/portal/sso/{acme.slug}/"' in chosen.content.decode()


def test_a_password_sign_in_is_not_the_sso_backends(acme, client, django_user_model):
    django_user_model.objects.create_user("pat", password="pw-for-tests-1")
    response = client.post("/portal/login/", {"username": "pat", "password": "pw-for-tests-1"})
    assert response.status_code == 302
    assert not SsoIdentity.objects.exists()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_an_sso_sign_in_in_the_browser(live_server, browser_page, acme, provider):
    """Chromium: the login page's SSO link, the organisation, the provider's own form,
    and back on the portal as a new member of the customer."""
    from tests.runtime import ARTIFACTS

    page = browser_page
    page.goto(f"{live_server.url}/portal/login/")
    page.click("text=Sign in with your organisation's single sign-on")
    page.fill("input[name=customer]", acme.slug)
    page.click("button[type=submit]")
    page.click("#sso-continue")
    page.wait_for_url(f"{provider}/oauth2/authorize*")
    page.fill("input[name=sub]", "grace@acme.example")
    page.console_errors.clear()  # the mock provider's page wants a stylesheet from a CDN
    page.click("button:text-is('Authorize')")
    page.wait_for_url(f"{live_server.url}/portal/")
    assert acme.name in page.content()
    page.screenshot(path=str(ARTIFACTS / "portal-sso-signed-in.png"), full_page=True)
    identity = SsoIdentity.objects.get()
    assert identity.email == "grace@acme.example"  # the provider's default claims
    assert Membership.objects.get(user=identity.user).role == MemberRole.ADMIN
    assert not page.console_errors
