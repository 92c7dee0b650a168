"""Signing in beyond the password: the second step (an authenticator code or a recovery
code), setting up and managing two-factor, and password reset by email (Django's views,
with our templates, links to PORTAL_URL and an audit record)."""

from base64 import b32encode

import segno
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import SetPasswordForm
from django.contrib.auth.models import User
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse, reverse_lazy
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django_otp.plugins.otp_totp.models import TOTPDevice

from fleet import selectors
from fleet.errors import FleetError
from fleet.http import request_actor
from fleet.services.accounts import (
    password_reset_record,
    recovery_codes_replace,
    second_factor_verify,
    two_factor_disable,
    two_factor_enable,
    two_factor_setup_device,
)
from fleet.services.audit import Actor
from portal.forms import CodeForm
from portal.second_factor import SESSION_PENDING, second_factor_done, user_is_verified, with_next


def _next(request: HttpRequest) -> str:
    """Where to go once signed in: `next` when it is a page of ours, else the dashboard."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return resolve_url(settings.LOGIN_REDIRECT_URL)


def _signed_in(request: HttpRequest) -> User:
    """The signed-in user (login_required let the request through)."""
    assert isinstance(request.user, User)
    return request.user


@never_cache
@login_required
def second_factor(request: HttpRequest) -> HttpResponse:
    """The sign-in's second step, after the password."""
    user = _signed_in(request)
    next_url = _next(request)
    if not request.session.get(SESSION_PENDING) and user_is_verified(user):
        return redirect(next_url)
    if not selectors.user_has_second_factor(user):  # turned off elsewhere meanwhile
        request.session.pop(SESSION_PENDING, None)
        return redirect(next_url)
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            device = second_factor_verify(
                user=user, code=form.cleaned_data["code"], actor=request_actor(request)
            )
        except FleetError as exc:
            form.add_error("code", exc.detail)
        else:
            second_factor_done(request, device)
            return redirect(next_url)
    return render(
        request,
        "registration/second_factor.html",
        {"form": form, "next": next_url},
        status=422 if form.errors else 200,
    )


def _qr_svg(device: TOTPDevice) -> str:
    """The authenticator's key as a QR code, inline SVG drawn here (no script, no CDN)."""
    qr = segno.make(device.config_url, error="m")
    svg = qr.svg_inline(
        scale=5, dark="#111", light="#fff", title="QR code for your authenticator app"
    )
    return mark_safe(svg)  # noqa: S308 - segno's own markup: paths from our key, an escaped title


def _key_text(device: TOTPDevice) -> str:
    key = b32encode(device.bin_key).decode()
    return " ".join(key[i : i + 4] for i in range(0, len(key), 4))


@never_cache
@login_required
def two_factor(request: HttpRequest) -> HttpResponse:
    """Set up two-factor (scan, type a code, keep the recovery codes shown once), or with
    it on: new recovery codes, or turn it off (with a code, unless it is required)."""
    user = _signed_in(request)
    actor = request_actor(request)
    next_url = _next(request)
    enabled = selectors.user_has_second_factor(user)
    if enabled and not user_is_verified(user):
        return redirect(with_next(reverse("portal:second_factor"), request))
    form: Form = CodeForm(request.POST or None)
    context: dict[str, object] = {
        "form": form,
        "next": next_url,
        "requirement": selectors.two_factor_requirement(user),
    }
    if not enabled:
        device = two_factor_setup_device(user)
        if request.method == "POST" and form.is_valid():
            try:
                device, codes = two_factor_enable(
                    user=user,
                    code=form.cleaned_data["code"],
                    actor=actor,
                    keep_session=request.session.session_key,
                )
            except FleetError as exc:
                form.add_error("code", exc.detail)
            else:
                second_factor_done(request, device)
                return render(
                    request, "portal/two_factor.html", {**context, "codes": codes, "enabled": True}
                )
        return render(
            request,
            "portal/two_factor.html",
            {**context, "qr": _qr_svg(device), "key": _key_text(device)},
            status=422 if form.errors else 200,
        )
    action = request.POST.get("action")
    if request.method == "POST" and action == "codes":
        codes = recovery_codes_replace(user=user, actor=actor)
        return render(
            request, "portal/two_factor.html", {**context, "codes": codes, "enabled": True}
        )
    if request.method == "POST" and action == "disable" and form.is_valid():
        try:
            two_factor_disable(user=user, code=form.cleaned_data["code"], actor=actor)
        except FleetError as exc:
            form.add_error("code", exc.detail)
        else:
            messages.success(request, "Two-factor sign-in is off.")
            return redirect("portal:two_factor")
    return render(
        request,
        "portal/two_factor.html",
        {**context, "enabled": True, "codes_left": selectors.recovery_codes_left(user)},
        status=422 if form.errors else 200,
    )


# --- password reset by email --------------------------------------------------------------


class PasswordResetView(auth_views.PasswordResetView):
    """Asks for an address and always answers the same ("if it has an account, a link is
    on its way"), so the page never tells whether an address has an account. The link
    points at PORTAL_URL, never at the Host header the request came with."""

    template_name = "registration/password_reset_form.html"
    email_template_name = "registration/password_reset_email.txt"
    subject_template_name = "registration/password_reset_subject.txt"
    success_url = reverse_lazy("portal:password_reset_done")

    def form_valid(self, form: Form) -> HttpResponse:
        self.extra_email_context = {
            "portal_url": settings.PORTAL_URL.rstrip("/"),
            "timeout_minutes": settings.PASSWORD_RESET_TIMEOUT // 60,
        }
        return super().form_valid(form)


@method_decorator(never_cache, name="dispatch")
class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    """The emailed link: a new password (Django's validators); the link then stops working
    and every session of the account ends. The second factor is still asked at sign-in."""

    template_name = "registration/password_reset_confirm.html"
    success_url = reverse_lazy("portal:password_reset_complete")

    def form_valid(self, form: SetPasswordForm) -> HttpResponse:
        response = super().form_valid(form)
        user = form.user
        password_reset_record(
            user=user,
            actor=Actor(
                user=user,
                label=user.get_username(),
                ip_address=request_actor(self.request).ip_address,
            ),
        )
        return response


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    template_name = "registration/password_reset_done.html"

    def get_context_data(self, **kwargs: object) -> dict[str, object]:
        return {
            **super().get_context_data(**kwargs),
            "timeout_minutes": settings.PASSWORD_RESET_TIMEOUT // 60,
        }
