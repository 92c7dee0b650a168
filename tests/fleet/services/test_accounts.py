"""Two-factor: set up with a code from the app, recovery codes stored as digests and
spent once, replayed or wrong codes refused (and counted), off only when not required."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from fleet.choices import MemberRole
from fleet.errors import NotAllowed, SecondFactorRefused
from fleet.models import AuditEvent
from fleet.secrets import recovery_code_digest
from fleet.services.accounts import (
    recovery_codes_replace,
    second_factor_verify,
    two_factor_disable,
    two_factor_enable,
    two_factor_setup_device,
)
from fleet.services.audit import SYSTEM, Actor
from fleet.services.customers import customer_two_factor_require, membership_set
from tests.second_factor import authenticator_code

pytestmark = pytest.mark.django_db


@pytest.fixture
def ann(django_user_model):
    return django_user_model.objects.create_user("ann", email="ann@example.com")


def enabled(user):
    device = two_factor_setup_device(user)
    device, codes = two_factor_enable(user=user, code=authenticator_code(device), actor=SYSTEM)
    return device, codes


def test_setup_keeps_one_pending_device_until_a_code_confirms_it(ann):
    device = two_factor_setup_device(ann)
    assert two_factor_setup_device(ann) == device  # a reload shows the same QR code
    assert not device.confirmed
    with pytest.raises(SecondFactorRefused):
        two_factor_enable(user=ann, code="000000", actor=SYSTEM)
    device.refresh_from_db()
    assert not device.confirmed and device.throttling_failure_count == 1  # counted, kept
    device.throttling_failure_timestamp = None  # the wait after a wrong code has passed
    device.save()
    device, codes = two_factor_enable(user=ann, code=authenticator_code(device), actor=SYSTEM)
    assert device.confirmed and len(codes) == 10 and len(set(codes)) == 10
    stored = set(StaticToken.objects.values_list("token", flat=True))
    assert stored == {recovery_code_digest(c) for c in codes}
    assert not stored & set(codes)
    assert AuditEvent.objects.filter(
        action="user.two_factor_enable", target_id=str(ann.pk)
    ).exists()


def test_a_code_is_accepted_once_and_a_recovery_code_once(ann):
    device, codes = enabled(ann)
    later = authenticator_code(device, steps_ahead=1)
    assert second_factor_verify(user=ann, code=later, actor=SYSTEM) == device
    with pytest.raises(SecondFactorRefused):  # replayed
        second_factor_verify(user=ann, code=later, actor=SYSTEM)
    recovery = codes[3].upper().replace("-", " ")  # as people type it
    assert second_factor_verify(user=ann, code=recovery, actor=SYSTEM).name == "Recovery codes"
    with pytest.raises(SecondFactorRefused):
        second_factor_verify(user=ann, code=codes[3], actor=SYSTEM)
    event = AuditEvent.objects.get(action="user.recovery_code_used")
    assert event.changes == {"recovery_codes_left": [None, 9]}


def test_wrong_codes_make_the_next_try_wait(ann):
    device, _ = enabled(ann)
    with pytest.raises(SecondFactorRefused, match="not right"):
        second_factor_verify(user=ann, code="123456", actor=SYSTEM)
    with pytest.raises(SecondFactorRefused, match="Too many wrong codes"):  # even a right one
        second_factor_verify(user=ann, code=authenticator_code(device, 1), actor=SYSTEM)


def test_new_recovery_codes_replace_the_old(ann):
    _, old = enabled(ann)
    new = recovery_codes_replace(user=ann, actor=SYSTEM)
    with pytest.raises(SecondFactorRefused):
        second_factor_verify(user=ann, code=old[0], actor=SYSTEM)
    with time_machine.travel(timezone.now() + timedelta(seconds=2)):  # past the wait
        second_factor_verify(user=ann, code=new[0], actor=SYSTEM)


def test_turning_off_needs_a_code_and_is_refused_while_required(ann, customer):
    _, codes = enabled(ann)
    membership_set(customer=customer, user=ann, role=MemberRole.OWNER, actor=SYSTEM)
    customer_two_factor_require(customer=customer, required=True, actor=Actor(user=ann))
    with pytest.raises(NotAllowed, match="requires every member"):
        two_factor_disable(user=ann, code=codes[0], actor=SYSTEM)
    customer_two_factor_require(customer=customer, required=False, actor=SYSTEM)
    with pytest.raises(SecondFactorRefused):
        two_factor_disable(user=ann, code="999999", actor=SYSTEM)
    assert TOTPDevice.objects.filter(user=ann).exists()
    with time_machine.travel(timezone.now() + timedelta(seconds=2)):
        two_factor_disable(user=ann, code=codes[0], actor=SYSTEM)
    assert not TOTPDevice.objects.filter(user=ann).exists()
    assert not StaticToken.objects.exists()


def test_only_an_owner_with_two_factor_can_require_it(customer, ann):
    with pytest.raises(NotAllowed, match="your own account first"):
        customer_two_factor_require(customer=customer, required=True, actor=Actor(user=ann))
    enabled(ann)
    customer_two_factor_require(customer=customer, required=True, actor=Actor(user=ann))
    customer.refresh_from_db()
    assert customer.require_two_factor
    event = AuditEvent.objects.get(action="customer.update")
    assert event.changes == {"require_two_factor": [False, True]}


def test_staff_cannot_turn_it_off_when_staff_must_use_it(ann, settings):
    _, codes = enabled(ann)
    ann.is_staff = True
    ann.save()
    settings.STAFF_REQUIRE_2FA = True
    with pytest.raises(NotAllowed, match="staff"):
        two_factor_disable(user=ann, code=codes[0], actor=SYSTEM)


def test_turning_two_factor_on_ends_every_other_session(ann):
    """A session taken before (a phished password) never gave a code: it ends, the one that
    turned two-factor on stays."""
    from django.test import Client

    from fleet.models import UserSession

    stolen, mine = Client(), Client()
    stolen.force_login(ann)
    mine.force_login(ann)
    assert UserSession.objects.filter(user_id=ann.pk).count() == 2
    device = two_factor_setup_device(ann)
    two_factor_enable(
        user=ann,
        code=authenticator_code(device),
        actor=SYSTEM,
        keep_session=mine.session.session_key,
    )
    assert list(
        UserSession.objects.filter(user_id=ann.pk).values_list("session_key", flat=True)
    ) == [mine.session.session_key]


def test_a_settings_save_from_a_stale_copy_keeps_another_owners_two_factor_rule(customer):
    from fleet.models import Customer
    from fleet.services.customers import customer_settings_set

    stale = Customer.objects.get(pk=customer.pk)  # loaded before the rule was turned on
    Customer.objects.filter(pk=customer.pk).update(require_two_factor=True)
    customer_settings_set(
        customer=stale, stale_cleanup_days=14, job_max_runtime_seconds=None, actor=SYSTEM
    )
    customer.refresh_from_db()
    assert (customer.require_two_factor, customer.stale_cleanup_days) == (True, 14)
