"""Members: every member sees who belongs to the customer; owners invite by email, change
roles, remove members and require two-factor sign-in. The invitation link's own pages
(open, accept) serve whoever holds it, signed in or not."""

from django.contrib import messages
from django.contrib.auth import login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from fleet import selectors
from fleet.choices import MemberRole
from fleet.errors import FleetError, InvalidInput
from fleet.http import request_actor
from fleet.models import Customer, Invitation
from fleet.services.customers import (
    customer_two_factor_require,
    membership_remove,
    membership_role_change,
)
from fleet.services.invitations import (
    invitation_accept,
    invitation_accept_new_user,
    invitation_refusal,
    invitation_send,
    invitation_withdraw,
)
from portal.forms import InvitationSignUpForm, InviteForm, MemberRoleForm, TwoFactorPolicyForm
from portal.views.base import SESSION_CUSTOMER, PortalRequest, member_view, page_context

SESSION_INVITATION = "portal_invitation"  # the token of the link opened, until accepted


@never_cache
@member_view(owner=True, posts_only=True)
def members(request: PortalRequest, customer: Customer) -> HttpResponse:
    """The list (everyone) and the invitation form (owners)."""
    form = InviteForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            sent = invitation_send(
                customer=customer,
                email=form.cleaned_data["email"],
                role=MemberRole(form.cleaned_data["role"]),
                actor=request_actor(request),
            )
        except FleetError as exc:
            form.add_error("email", exc.detail)
        else:
            messages.success(
                request,
                f"Invitation sent to {sent.invitation.email}: its link works once, for 7 days.",
            )
            return redirect("portal:members")
    member_rows = list(selectors.member_list(customer))
    return render(
        request,
        "portal/members.html",
        page_context(
            request,
            form=form,
            members=member_rows,
            owners=sum(m.role == MemberRole.OWNER for m in member_rows),
            invitations=list(selectors.invitation_list(customer)),
            roles=MemberRole.choices,
            now=timezone.now(),
        ),
        status=422 if form.errors else 200,
    )


@member_view(owner=True)
@require_POST
def member_role_view(
    request: PortalRequest, customer: Customer, membership_id: int
) -> HttpResponse:
    membership = selectors.membership_get(customer, membership_id)
    form = MemberRoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose owner, admin or viewer.")
        return redirect("portal:members")
    role = MemberRole(form.cleaned_data["role"])
    try:
        membership_role_change(membership=membership, role=role, actor=request_actor(request))
    except FleetError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, f"{membership.user.get_username()} is now {role.label.lower()}.")
    return redirect("portal:members")


@member_view(owner=True)
@require_POST
def member_remove_view(
    request: PortalRequest, customer: Customer, membership_id: int
) -> HttpResponse:
    membership = selectors.membership_get(customer, membership_id)
    name = membership.user.get_username()
    try:
        membership_remove(membership=membership, actor=request_actor(request))
    except FleetError as exc:
        messages.error(request, exc.detail)
        return redirect("portal:members")
    if membership.user_id == request.user.pk:
        return redirect("portal:login")  # they removed themselves: signed out everywhere
    messages.success(request, f"{name} is removed from {customer} and signed out everywhere.")
    return redirect("portal:members")


@member_view(owner=True)
@require_POST
def invitation_withdraw_view(
    request: PortalRequest, customer: Customer, invitation_id: int
) -> HttpResponse:
    invitation = selectors.invitation_get(customer, invitation_id)
    if invitation_withdraw(invitation=invitation, actor=request_actor(request)):
        messages.success(request, f"The invitation to {invitation.email} is withdrawn.")
    return redirect("portal:members")


@member_view(owner=True)
@require_POST
def members_two_factor_view(request: PortalRequest, customer: Customer) -> HttpResponse:
    form = TwoFactorPolicyForm(request.POST)
    required = form.is_valid() and form.cleaned_data["require_two_factor"]
    try:
        customer_two_factor_require(
            customer=customer, required=required, actor=request_actor(request)
        )
    except FleetError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(
            request,
            "Every member now signs in with a second factor; those without one set it up "
            "at their next page."
            if required
            else "Two-factor sign-in is now each member's own choice.",
        )
    return redirect("portal:members")


# --- the invitation link ---------------------------------------------------------------


@never_cache
def invitation_open(request: HttpRequest, token: str) -> HttpResponse:
    """The link from the email. The token moves into the session and out of the address
    bar (and of the history, and of any Referer) before the page shows, as Django's
    password reset does."""
    if selectors.invitation_for_token(token) is None:
        raise Http404("No such invitation.")
    request.session[SESSION_INVITATION] = token
    return redirect("portal:invitation_accept")


def _invitation(request: HttpRequest) -> Invitation:
    invitation = selectors.invitation_for_token(request.session.get(SESSION_INVITATION, ""))
    if invitation is None:
        raise Http404("No invitation: open the link from the email again.")
    return invitation


@never_cache
def invitation_accept_view(request: HttpRequest) -> HttpResponse:
    """Accept: the signed-in account with the invited address joins; without an account
    one is created (a username and a password); an address with an account signs in."""
    invitation = _invitation(request)
    context: dict[str, object] = {"invitation": invitation}
    refusal = invitation_refusal(invitation)
    if refusal:
        return render(
            request, "portal/invitation.html", {**context, "refusal": refusal}, status=410
        )
    actor = request_actor(request)
    user = request.user
    if user.is_authenticated:
        if request.method == "POST":
            try:
                membership = invitation_accept(invitation=invitation, user=user, actor=actor)
            except FleetError as exc:
                return render(
                    request,
                    "portal/invitation.html",
                    {**context, "refusal": exc.detail},
                    status=exc.status,
                )
            request.session.pop(SESSION_INVITATION, None)
            request.session[SESSION_CUSTOMER] = membership.customer_id
            messages.success(request, f"Welcome to {membership.customer}.")
            return redirect("portal:dashboard")
        mismatch = (user.email or "").strip().lower() != invitation.email
        return render(
            request,
            "portal/invitation.html",
            {**context, "mismatch": mismatch},
            status=403 if mismatch else 200,
        )
    if selectors.account_exists_for_email(invitation.email):
        return render(request, "portal/invitation.html", {**context, "sign_in": True})
    form = InvitationSignUpForm(request.POST or None, email=invitation.email)
    if request.method == "POST" and form.is_valid():
        try:
            joined = invitation_accept_new_user(
                invitation=invitation,
                username=form.cleaned_data["username"],
                password=form.cleaned_data["password1"],
                actor=actor,
            )
        except InvalidInput as exc:
            form.add_error("username", exc.detail)
        except FleetError as exc:
            return render(
                request,
                "portal/invitation.html",
                {**context, "refusal": exc.detail},
                status=exc.status,
            )
        else:
            login(request, joined, backend="django.contrib.auth.backends.ModelBackend")
            request.session.pop(SESSION_INVITATION, None)
            messages.success(request, f"Welcome to {invitation.customer}.")
            return redirect("portal:dashboard")
    return render(
        request,
        "portal/invitation.html",
        {**context, "form": form},
        status=422 if form.errors else 200,
    )
