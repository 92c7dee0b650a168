"""The GitHub-compatible receiver: pull-request events become verdicts on the jobs whose
result names that pull request."""

import json
from typing import Annotated

from django.http import HttpRequest
from django.urls import reverse
from ninja import Header, Router, Status

from fleet.api.auth import authed_key, key_settings
from fleet.api.schemas import GithubDeliveryOut, GithubSecretOut, errors
from fleet.api.throttles import ApiKeyThrottle
from fleet.errors import InvalidJson
from fleet.http import client_address
from fleet.services.audit import Actor
from fleet.services.outcomes import (
    GithubDelivery,
    github_event_record,
    github_secret_mint,
    github_signature_check,
)

router = Router(tags=["integrations"])


@router.post(
    "/integrations/github/secret",
    auth=key_settings,
    throttle=[ApiKeyThrottle()],
    response={200: GithubSecretOut, **errors(401, 403, 422, 429)},
    summary="Mint the GitHub webhook secret (shown once; the old one stops working)",
)
def github_secret(request: HttpRequest) -> dict[str, str]:
    key = authed_key(request)
    integration, secret = github_secret_mint(
        customer=key.customer, actor=Actor.for_api_key(key, client_address(request))
    )
    path = reverse("api-v1:github_receiver", kwargs={"customer_slug": key.customer.slug})
    return {
        "secret": secret,
        "secret_prefix": integration.secret_prefix,
        "url": request.build_absolute_uri(path),
    }


@router.post(
    "/integrations/github/{customer_slug}",
    auth=None,
    url_name="github_receiver",
    response={200: GithubDeliveryOut, 202: GithubDeliveryOut, **errors(401, 413, 422)},
    summary="GitHub webhook: pull requests merged or closed, reviews approving or asking "
    "for changes",
)
def github_receiver(
    request: HttpRequest,
    customer_slug: str,
    event: Annotated[str, Header(alias="X-GitHub-Event", max_length=100)] = "",
    signature: Annotated[str, Header(alias="X-Hub-Signature-256", max_length=200)] = "",
) -> Status[GithubDelivery]:
    """Verified with HMAC-SHA256 of the raw body under the customer's secret (a bad or
    missing signature is 401 `invalid_signature`, nothing recorded). A mapped event is
    200 with the jobs judged; anything else 202 with why it was ignored."""
    customer = github_signature_check(customer_slug, request.body, signature)
    try:
        payload = json.loads(request.body)
    except ValueError as exc:
        raise InvalidJson("The body is not JSON.", errors=[str(exc)]) from None
    if not isinstance(payload, dict):
        raise InvalidJson("The body is not a JSON object.", errors=[])
    delivery = github_event_record(customer, event, payload)
    return Status(200 if delivery.job_ids else 202, delivery)
