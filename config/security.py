"""Content-Security-Policy on every HTML response: scripts only from our own static files
(or an inline script carrying this request's nonce), nothing from anywhere else."""

import secrets
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

PORTAL_POLICY = (
    "default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'self'; object-src 'none'"
)
# Django's own admin templates carry a few inline style attributes; scripts stay strict.
ADMIN_POLICY = PORTAL_POLICY.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")


def content_security_policy(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    def middleware(request: HttpRequest) -> HttpResponse:
        nonce = secrets.token_urlsafe(16)
        request.csp_nonce = nonce  # type: ignore[attr-defined]
        response = get_response(request)
        if response.get("Content-Type", "").startswith("text/html"):
            policy = ADMIN_POLICY if request.path.startswith("/admin/") else PORTAL_POLICY
            response["Content-Security-Policy"] = policy.format(nonce=nonce)
        return response

    return middleware
