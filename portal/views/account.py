"""The member's account: which customer they act for, its API keys and its audit log."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from fleet import selectors
from fleet.http import request_actor
from fleet.models import Customer
from fleet.services.api_keys import api_key_mint, api_key_revoke
from portal.forms import ApiKeyForm
from portal.views.base import (
    SESSION_CUSTOMER,
    PortalRequest,
    member_view,
    page_context,
    paginate,
    partial_or_page,
)


@login_required
@require_POST
def switch_customer(request: HttpRequest) -> HttpResponse:
    slug = request.POST.get("customer", "").replace("\x00", "")
    membership = selectors.membership_list(request.user).filter(customer__slug=slug).first()
    if membership is not None:
        request.session[SESSION_CUSTOMER] = membership.customer_id
    return redirect("portal:dashboard")


@never_cache
@member_view(steer=True, posts_only=True)
def api_keys(request: PortalRequest, customer: Customer) -> HttpResponse:
    form = ApiKeyForm()
    minted = None
    if request.method == "POST":
        form = ApiKeyForm(request.POST)
        if form.is_valid():
            minted = api_key_mint(
                customer=customer, name=form.cleaned_data["name"], actor=request_actor(request)
            )
            form = ApiKeyForm()
    return render(
        request,
        partial_or_page(request, "portal/api_keys.html", "mint"),
        page_context(
            request,
            form=form,
            minted=minted,
            keys=selectors.api_key_list(customer),
        ),
        status=422 if form.errors else 200,
    )


@member_view(steer=True)
@require_POST
def api_key_revoke_view(request: PortalRequest, customer: Customer, key_id: int) -> HttpResponse:
    api_key_revoke(key=selectors.api_key_get(customer, key_id), actor=request_actor(request))
    messages.success(request, "The key is revoked; it stops working at once.")
    return redirect("portal:api_keys")


@member_view()
def activity(request: PortalRequest, customer: Customer) -> HttpResponse:
    return render(
        request,
        "portal/activity.html",
        page_context(
            request,
            page=paginate(request, selectors.audit_list(customer)),
        ),
    )
