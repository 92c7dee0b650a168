import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from fleet.choices import AgentStatus
from fleet.errors import InvalidLicense, LicenseBelowActiveAgents
from fleet.models import AuditEvent, License
from fleet.services.audit import SYSTEM, Actor
from fleet.services.licenses import (
    license_create,
    license_resume,
    license_suspend,
    license_update,
)
from tests import factories

pytestmark = pytest.mark.django_db


def test_a_new_license_becomes_current_and_keeps_history(customer, admin_user):
    first = license_create(
        license=License(customer=customer, max_agents=5),
        actor=Actor(user=admin_user, label=admin_user.username),
    )
    second = license_create(
        license=License(customer=customer, max_agents=8),
        actor=Actor(user=admin_user, label=admin_user.username),
    )
    first.refresh_from_db()
    assert (first.is_current, second.is_current) == (False, True)
    events = AuditEvent.objects.filter(action="license.create", customer=customer)
    assert events.count() == 2
    assert events.first().actor_user == admin_user
    assert events.first().changes["max_agents"] == [None, "8"]


def test_lowering_max_agents_below_active_agents_needs_confirmation(customer):
    lic = factories.license(customer, max_agents=5)
    for _ in range(3):
        factories.agent(customer)
    factories.agent(customer, status=AgentStatus.DECOMMISSIONED)  # holds no seat
    lic.max_agents = 2
    with pytest.raises(LicenseBelowActiveAgents) as exc:
        license_update(license=lic, actor=SYSTEM)
    assert exc.value.extra == {"active_agents": 3, "max_agents": 2}
    assert License.objects.get(pk=lic.pk).max_agents == 5  # nothing written
    lic.max_agents = 3  # exactly the active agents is fine
    license_update(license=lic, actor=SYSTEM)
    lic.max_agents = 2
    license_update(license=lic, confirm_below_active=True, actor=SYSTEM)
    assert License.objects.get(pk=lic.pk).max_agents == 2
    assert AuditEvent.objects.filter(action="license.update").count() == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_agents", 0), ("max_concurrent_tasks_per_agent", 0), ("valid_until", "past")],
)
def test_invalid_license_values_are_refused_with_the_field(customer, field, value):
    lic = factories.license(customer)
    setattr(lic, field, lic.valid_from - timedelta(days=1) if value == "past" else value)
    with pytest.raises(InvalidLicense) as exc:
        license_update(license=lic, actor=SYSTEM)
    assert exc.value.extra["field"] == field


def test_update_without_changes_writes_nothing(customer):
    lic = factories.license(customer)
    license_update(license=lic, actor=SYSTEM)
    assert not AuditEvent.objects.exists()


def test_suspend_and_resume_are_idempotent(customer):
    lic = factories.license(customer)
    license_suspend(license=lic, reason="unpaid invoice", actor=SYSTEM)
    license_suspend(license=lic, reason="unpaid invoice", actor=SYSTEM)
    assert lic.suspended
    assert lic.suspended_reason == "unpaid invoice"
    assert not lic.admits_agents_at(timezone.now())
    license_resume(license=lic, actor=SYSTEM)
    license_resume(license=lic, actor=SYSTEM)
    assert not lic.suspended
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions == ["license.suspend", "license.resume"]


def test_expired_or_future_license_admits_no_agents(customer):
    now = timezone.now()
    lic = factories.license(
        customer, valid_from=now - timedelta(days=30), valid_until=now - timedelta(days=1)
    )
    assert not lic.admits_agents_at(now)
    lic.valid_until = None
    assert lic.admits_agents_at(now)
    lic.valid_from = now + timedelta(days=1)
    assert not lic.admits_agents_at(now)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_license_creation_leaves_one_current(customer):
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def create(seats: int) -> None:
        try:
            barrier.wait()
            license_create(license=License(customer=customer, max_agents=seats), actor=SYSTEM)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=create, args=(n,)) for n in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert License.objects.filter(customer=customer).count() == 6
    assert License.objects.filter(customer=customer, is_current=True).count() == 1
