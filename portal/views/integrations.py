"""The GitHub receiver on the Settings page: owners mint its webhook secret, shown once."""

from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from fleet.http import request_actor
from fleet.models import Customer
from fleet.services.outcomes import github_secret_mint
from portal.views.base import PortalRequest, member_view, page_context


@never_cache
@member_view(owner=True)
@require_POST
def github_secret_view(request: PortalRequest, customer: Customer) -> HttpResponse:
    """Mint (or replace) the secret; the page shows it once with the URL to give GitHub."""
    integration, secret = github_secret_mint(
        customer=customer, actor=request_actor(request), user=request.user
    )
    url = request.build_absolute_uri(
        reverse("api-v1:github_receiver", kwargs={"customer_slug": customer.slug})
    )
    return render(
        request,
        "portal/github_secret.html",
        page_context(request, secret=secret, url=url, integration=integration),
    )
