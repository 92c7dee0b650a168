"""Activation tokens: mint against free seats (each secret shown once), revoke inline."""

from datetime import timedelta

from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from fleet import selectors
from fleet.errors import FleetError
from fleet.http import request_actor
from fleet.models import ActivationToken, Customer
from fleet.services.tokens import token_revoke, tokens_mint_for_seats
from portal.forms import MintTokensForm
from portal.install import install_command
from portal.views.base import (
    PortalRequest,
    member_view,
    page_context,
    paginate,
    partial_or_page,
)


@never_cache  # a secret shown once must not come back from the browser's cache
@member_view(steer=True, posts_only=True)
def tokens(request: PortalRequest, customer: Customer) -> HttpResponse:
    form = MintTokensForm()
    minted: list[tuple[ActivationToken, str]] = []
    if request.method == "POST":
        form = MintTokensForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                minted = tokens_mint_for_seats(
                    customer=customer,
                    count=data["count"],
                    role=data["role"],
                    expires_in=timedelta(days=data["expires_in_days"]),
                    note=data["note"],
                    ephemeral=data["ephemeral"],
                    labels=data["labels"],
                    actor=request_actor(request),
                )
                form = MintTokensForm()
            except FleetError as exc:
                form.add_error("count", exc.detail)
    rows = paginate(request, selectors.token_list(customer))
    server = request.build_absolute_uri("/").rstrip("/")
    # Each secret with the command that enrolls a host with it, as the page shows it.
    enrolments = [
        (token, secret, install_command(server=server, token=secret, role=token.role))
        for token, secret in minted
    ]
    # Minting by htmx swaps only the secrets in: a reload is then a plain GET that shows
    # them no more (and never mints twice). The table then refreshes itself.
    part = "token_table" if request.GET.get("part") == "table" else "mint"
    response = render(
        request,
        partial_or_page(request, "portal/tokens.html", part),
        page_context(
            request,
            form=form,
            minted=enrolments,
            page=rows,
            seats=selectors.license_seats(customer),
        ),
        status=422 if form.errors else 200,
    )
    if minted:
        response["HX-Trigger"] = "tokens-changed"
    return response


@member_view(steer=True)
@require_POST
def token_revoke_view(request: PortalRequest, customer: Customer, token_id: int) -> HttpResponse:
    token = selectors.token_get(customer, token_id)
    token_revoke(token=token, actor=request_actor(request))
    token.refresh_from_db()
    if request.htmx:
        return render(request, "portal/tokens.html#token_row", page_context(request, token=token))
    return redirect("portal:tokens")
