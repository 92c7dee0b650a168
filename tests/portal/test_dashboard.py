import pytest

from fleet.choices import AgentStatus, MemberRole
from fleet.services.customers import membership_set
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def member(django_user_model, customer):
    user = django_user_model.objects.create_user("ada", password="pw-for-tests")
    membership_set(customer=customer, user=user, role=MemberRole.OWNER)
    return user


def test_portal_needs_a_login(client):
    response = client.get("/portal/")
    assert response.status_code == 302
    assert response["Location"].startswith("/portal/login/")
    assert client.get("/portal/login/").status_code == 200


def test_login_rotates_the_session(client, member):
    session = client.session  # an anonymous session exists before the login
    session["seen"] = True
    session.save()
    before = session.session_key
    response = client.post("/portal/login/", {"username": "ada", "password": "pw-for-tests"})
    assert response.status_code == 302
    after = client.cookies["sessionid"].value
    assert before
    assert after != before


def test_members_see_their_fleet_and_no_one_elses(
    client, member, customer, other_customer, django_assert_num_queries
):
    factories.agent(customer, name="ours-1")
    factories.agent(customer, name="ours-2", status=AgentStatus.OFFLINE)
    factories.agent(other_customer, name="theirs-1")
    client.force_login(member)
    client.get("/portal/")
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as few:
        page = client.get("/portal/")
    for _ in range(20):
        factories.agent(customer)
    with django_assert_num_queries(len(few.captured_queries)):  # flat as the fleet grows
        client.get("/portal/")
    html = page.content.decode()
    assert "ours-1" in html
    assert "ours-2" in html
    assert "theirs-1" not in html
    # Asking for another customer by slug falls back to one's own.
    assert "theirs-1" not in client.get(f"/portal/?customer={other_customer.slug}").content.decode()


def test_users_in_two_customers_can_switch(client, member, other_customer):
    membership_set(customer=other_customer, user=member, role=MemberRole.VIEWER)
    factories.agent(other_customer, name="theirs-1")
    client.force_login(member)
    page = client.get(f"/portal/?customer={other_customer.slug}").content.decode()
    assert "theirs-1" in page
    assert 'name="customer"' in page


def test_a_user_without_customer_is_told_what_to_do(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("loner"))
    assert b"not a member of any customer" in client.get("/portal/").content


def test_empty_fleet_says_how_to_enroll_the_first_agent(client, member):
    client.force_login(member)
    assert b"Mint an activation token" in client.get("/portal/").content
