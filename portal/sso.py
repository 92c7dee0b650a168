"""OpenID Connect sign-in per customer, with mozilla-django-oidc: each customer's
provider (fleet.models.CustomerSso) is read from the database instead of settings. The
flow: /portal/sso/ asks which customer, /portal/sso/<slug>/ sends the browser to its
provider (state, nonce, and PKCE when the provider offers it), and /portal/sso/callback/
exchanges the code, checks the ID token's signature (the provider's JWKS), issuer,
audience and nonce, and signs in the user fleet.services.sso.sso_sign_in gives."""

import logging
from typing import Any
from urllib.parse import urlencode

import jwt
import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET
from django.views.generic import View
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import import_from_settings
from mozilla_django_oidc.views import (
    OIDCAuthenticationCallbackView,
    OIDCAuthenticationRequestView,
)

from fleet.http import client_address
from fleet.models import CustomerSso
from fleet.services.sso import sso_sign_in
from portal.views.base import SESSION_CUSTOMER

logger = logging.getLogger(__name__)

SESSION_SSO = "portal_sso_customer"  # the customer whose provider the browser went to
METADATA_CACHE_SECONDS = 600


class SsoUnavailable(Exception):
    """The provider's metadata could not be read."""


def provider_metadata(sso: CustomerSso) -> dict[str, Any]:
    """The provider's discovery document (cached for ten minutes)."""
    key = f"sso:metadata:{sso.pk}:{sso.issuer}"
    metadata = cache.get(key)
    if metadata is None:
        url = sso.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            response = requests.get(url, timeout=settings.OIDC_TIMEOUT)
            response.raise_for_status()
            metadata = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise SsoUnavailable(f"{url}: {exc}") from exc
        cache.set(key, metadata, METADATA_CACHE_SECONDS)
    return metadata


def sso_for(slug: str) -> CustomerSso | None:
    return (
        CustomerSso.objects.select_related("customer")
        .filter(customer__slug=slug, enabled=True)
        .first()
    )


class SsoStartView(OIDCAuthenticationRequestView):
    """Send the browser to the customer's provider."""

    def __init__(self, **kwargs: Any) -> None:
        View.__init__(self, **kwargs)  # the endpoints are the customer's, read in get()
        self.pkce = False

    def get_settings(self, attr: str, *args: Any) -> Any:
        if attr == "OIDC_USE_PKCE":
            return self.pkce
        return import_from_settings(attr, *args)

    def get(self, request: HttpRequest, slug: str = "") -> HttpResponse:
        sso = sso_for(slug)
        if sso is None:
            raise Http404("No single sign-on for this customer.")
        try:
            metadata = provider_metadata(sso)
        except SsoUnavailable:
            logger.warning("SSO provider unreachable for %s", slug, exc_info=True)
            messages.error(
                request, "Your organisation's sign-in service did not answer; try again."
            )
            return redirect("portal:login")
        self.OIDC_OP_AUTH_ENDPOINT = metadata["authorization_endpoint"]
        self.OIDC_RP_CLIENT_ID = sso.client_id
        self.pkce = "S256" in metadata.get("code_challenge_methods_supported", [])
        request.session[SESSION_SSO] = sso.customer_id
        return super().get(request)


class SsoCallbackView(OIDCAuthenticationCallbackView):
    """Back from the provider: authenticate (CustomerOidcBackend), open the portal on
    that customer."""

    @property
    def failure_url(self) -> str:
        return reverse("portal:login") + "?" + urlencode({"sso": "failed"})

    def login_success(self) -> HttpResponse:
        customer_id = self.request.session.get(SESSION_SSO)
        response = super().login_success()
        self.request.session.pop(SESSION_SSO, None)
        self.request.session[SESSION_CUSTOMER] = customer_id
        return response

    def login_failure(self) -> HttpResponse:
        messages.error(self.request, "Single sign-on did not sign you in; try again.")
        return HttpResponseRedirect(self.failure_url)


class CustomerOidcBackend(OIDCAuthenticationBackend):
    """Authenticates only the callback's code (never a password), against the provider
    of the customer the session went to."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.UserModel = User
        self.OIDC_RP_SIGN_ALGO = "RS256"
        self.OIDC_RP_IDP_SIGN_KEY = None
        self.sso: CustomerSso | None = None
        self.issuer = ""

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> User | None:
        if request is None or "nonce" not in kwargs or set(kwargs) - {"nonce", "code_verifier"}:
            return None  # a password sign-in, or anything else: not ours
        customer_id = request.session.get(SESSION_SSO)
        if not isinstance(customer_id, int):
            return None
        self.sso = (
            CustomerSso.objects.select_related("customer")
            .filter(customer_id=customer_id, enabled=True)
            .first()
        )
        if self.sso is None:
            return None
        try:
            metadata = provider_metadata(self.sso)
        except SsoUnavailable:
            logger.warning("SSO provider unreachable at the callback", exc_info=True)
            return None
        self.issuer = metadata.get("issuer", "")
        self.OIDC_OP_TOKEN_ENDPOINT = metadata["token_endpoint"]
        self.OIDC_OP_USER_ENDPOINT = metadata["userinfo_endpoint"]
        self.OIDC_OP_JWKS_ENDPOINT = metadata["jwks_uri"]
        self.OIDC_RP_CLIENT_ID = self.sso.client_id
        self.OIDC_RP_CLIENT_SECRET = self.sso.client_secret
        try:
            return super().authenticate(request, **kwargs)
        except (requests.RequestException, SuspiciousOperation):
            logger.warning("SSO sign-in refused for %s", self.sso.customer.slug, exc_info=True)
            return None

    def retrieve_matching_jwk(self, token: bytes) -> jwt.PyJWK:
        """The provider's signing key for this token: the one its `kid` names or, for a
        token without one, the provider's only key of the token's algorithm."""
        assert self.OIDC_OP_JWKS_ENDPOINT
        response = requests.get(self.OIDC_OP_JWKS_ENDPOINT, timeout=settings.OIDC_TIMEOUT)
        response.raise_for_status()
        header = jwt.get_unverified_header(token)
        keys = [
            k
            for k in response.json().get("keys", [])
            if k.get("alg", header.get("alg")) == header.get("alg")
            and k.get("use", "sig") == "sig"
            and ("kid" not in header or k.get("kid") == header["kid"])
        ]
        if len(keys) != 1:
            raise SuspiciousOperation("No single signing key of the provider fits the token.")
        return jwt.PyJWK(keys[0], algorithm=header.get("alg"))

    def get_payload_data(self, token: bytes, key: Any) -> dict[str, Any]:
        """The ID token's claims, its signature checked, and (what the library leaves
        out) that our provider issued it, to us."""
        payload: dict[str, Any] = super().get_payload_data(token, key)
        audience = payload.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if payload.get("iss") != self.issuer or self.OIDC_RP_CLIENT_ID not in audiences:
            raise SuspiciousOperation("The ID token is not from this provider, for us.")
        return payload

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        return bool(claims.get("sub"))

    def get_or_create_user(
        self, access_token: str, id_token: str, payload: dict[str, Any]
    ) -> User | None:
        assert self.sso is not None
        claims = self.get_userinfo(access_token, id_token, payload)
        if claims.get("sub") != payload.get("sub") or not self.verify_claims(claims):
            raise SuspiciousOperation("The userinfo is not the ID token's subject.")
        email = str(claims.get("email") or "")[:254] if claims.get("email_verified", True) else ""
        return sso_sign_in(
            customer=self.sso.customer,
            subject=str(payload["sub"])[:255],
            email=email,
            ip_address=client_address(self.request),
        )

    def get_user(self, user_id: int) -> User | None:
        """The signed-in user of a session this backend began, while still active."""
        user: User | None = ModelBackend.get_user(self, user_id)
        return user


@require_GET
def sso_choose(request: HttpRequest) -> HttpResponse:
    """Which customer to sign in with: its slug, as the login page's SSO link asks. The
    way on is a link, not a redirect: the Content-Security-Policy's form-action 'self'
    stops a form's redirect to another site (the provider)."""
    slug = request.GET.get("customer", "").strip().replace("\x00", "")[:64]
    sso = sso_for(slug) if slug else None
    if slug and sso is None:
        messages.error(request, "No single sign-on is set up under that name.")
    context = {
        "slug": slug,
        "start_url": reverse("portal:sso_start", args=[sso.customer.slug]) if sso else "",
        "customer_name": sso.customer.name if sso else "",
    }
    return render(
        request, "registration/sso.html", context, status=404 if slug and not sso else 200
    )
