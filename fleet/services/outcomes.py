"""What happened to a job's output ("trust the output"): verdicts reported by customer
automation, and GitHub's pull-request events mapped to verdicts.

One row per (job, source): a repeat of the same report changes nothing; a new verdict from
the same source replaces that source's. The job's own `verdict` (what the acceptance rate
counts) is the latest report of any source."""

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from fleet.choices import AuditAction, OutcomeVerdict
from fleet.errors import InvalidSignature, NotFound
from fleet.models import Customer, GithubIntegration, Job, JobOutcome
from fleet.services.audit import Actor, audit_record

PULL_REQUEST_URL_MAX = 500
GITHUB_SOURCE = "github"
GITHUB_SECRET_PREFIX = "ghsec_"  # noqa: S105 (a prefix, not a secret)
GITHUB_JOBS_PER_EVENT = 20  # jobs naming one pull request that one event may judge
GITHUB_ACTOR = Actor(label="integration:github")


def pull_request_named(result: Any) -> str:
    """The pull request a job's result names: `result["pull_request"]`, an http(s) URL
    as GitHub writes it (its `html_url`); "" when there is none."""
    if isinstance(result, dict):
        url = result.get("pull_request")
        if isinstance(url, str) and 0 < len(url) <= PULL_REQUEST_URL_MAX:
            url = url.strip()
            # Shown as a link: only a web address (never javascript: or data:).
            return url if url.lower().startswith(("https://", "http://")) else ""
    return ""


@transaction.atomic
def job_outcome_report(
    *,
    customer: Customer | int,
    job_id: int,
    verdict: OutcomeVerdict,
    source: str,
    url: str = "",
    note: str = "",
    actor: Actor,
    at: datetime | None = None,
) -> tuple[JobOutcome, bool]:
    """Record `source`'s verdict on a job of this customer (another customer's job is
    404). Returns the outcome and whether anything changed: the same report again changes
    nothing and is not audited again."""
    customer_id = customer.pk if isinstance(customer, Customer) else customer
    job = Job.objects.select_for_update().filter(pk=job_id, customer_id=customer_id).first()
    if job is None:
        raise NotFound("No such job.")
    at = at or timezone.now()
    outcome = JobOutcome.objects.filter(job=job, source=source).first()
    before = outcome.verdict if outcome else None
    if outcome is not None and (outcome.verdict, outcome.url, outcome.note) == (verdict, url, note):
        outcome.job = job
        return outcome, False
    if outcome is None:
        outcome = JobOutcome(customer_id=customer_id, job=job, source=source)
    outcome.verdict, outcome.url, outcome.note, outcome.reported_at = verdict, url, note, at
    outcome.save()
    # This report is the newest of any source: it is the job's verdict now.
    job.verdict, job.verdict_at = verdict, at
    Job.objects.filter(pk=job.pk).update(verdict=verdict, verdict_at=at)
    audit_record(
        actor=actor,
        action=AuditAction.JOB_OUTCOME,
        target=job,
        customer=customer_id,
        changes={"verdict": [before, str(verdict)], "source": [None, source]},
    )
    return outcome, True


# --- the GitHub receiver ----------------------------------------------------------------


def github_secret(integration: GithubIntegration) -> str:
    """The customer's webhook secret: derived, never stored. GitHub signs with the secret
    itself (HMAC-SHA256), so a digest of it could not verify anything; deriving it from
    ALERT_SIGNING_KEY and a random salt keeps it out of the database (a copy of the
    database cannot forge a verdict) while the receiver can still compute it."""
    digest = salted_hmac(
        "agentina.integrations.github-secret",
        f"{integration.customer_id}:{integration.secret_salt}",
        secret=settings.ALERT_SIGNING_KEY,
        algorithm="sha256",
    ).hexdigest()
    return GITHUB_SECRET_PREFIX + digest


@transaction.atomic
def github_secret_mint(
    *, customer: Customer, actor: Actor, user: Any = None
) -> tuple[GithubIntegration, str]:
    """Mint (or replace) the customer's GitHub webhook secret; returned once, never again.
    The old secret stops working at once."""
    salt = secrets.token_hex(16)
    integration, created = GithubIntegration.objects.update_or_create(
        customer=customer,
        defaults={"secret_salt": salt, "created_at": timezone.now(), "created_by": user},
    )
    secret = github_secret(integration)
    integration.secret_prefix = secret[: len(GITHUB_SECRET_PREFIX) + 6]
    integration.save(update_fields=["secret_prefix"])
    audit_record(
        actor=actor,
        action=AuditAction.GITHUB_SECRET_ROTATE,
        target=integration,
        customer=customer,
        changes={
            "secret_prefix": [None, integration.secret_prefix],
            "replaced": [None, not created],
        },
    )
    return integration, secret


def github_signature_check(customer_slug: str, body: bytes, signature: str) -> Customer:
    """The customer whose secret signed `body` (`X-Hub-Signature-256: sha256=<hex>`); any
    doubt (no such customer, no receiver set up, a wrong or missing signature) is the same
    401 `invalid_signature`, so the receiver says nothing about who exists."""
    integration = (
        GithubIntegration.objects.select_related("customer")
        .filter(customer__slug=customer_slug)
        .first()
    )
    expected = (
        "sha256="
        + hmac.new(
            github_secret(integration).encode() if integration else secrets.token_bytes(32),
            body,
            hashlib.sha256,
        ).hexdigest()
    )
    if integration is None or not hmac.compare_digest(expected, signature.strip()):
        raise InvalidSignature("The X-Hub-Signature-256 header does not match this body.")
    return integration.customer


@dataclass
class GithubDelivery:
    """What one event did: the verdict it maps to (None: ignored, and why), the jobs."""

    verdict: OutcomeVerdict | None = None
    ignored: str = ""
    url: str = ""
    note: str = ""
    job_ids: list[int] = field(default_factory=list)


def github_event_verdict(event: str, payload: dict[str, Any]) -> GithubDelivery:
    """Map a GitHub event to a verdict: a pull request closed and merged is accepted,
    closed unmerged rejected; a review approving it accepted, asking for changes
    changes_requested. Anything else is ignored."""
    pull = payload.get("pull_request")
    action = payload.get("action")
    if not isinstance(pull, dict) or not isinstance(pull.get("html_url"), str):
        return GithubDelivery(ignored=f"{event or 'unknown'} events are not used")
    url = pull["html_url"]
    if event == "pull_request" and action == "closed":
        merged = pull.get("merged") is True
        verdict = OutcomeVerdict.ACCEPTED if merged else OutcomeVerdict.REJECTED
        return GithubDelivery(verdict, url=url, note="merged" if merged else "closed unmerged")
    if event == "pull_request_review" and action == "submitted":
        review = payload.get("review")
        state = str(review.get("state", "")).lower() if isinstance(review, dict) else ""
        mapped = {
            "approved": OutcomeVerdict.ACCEPTED,
            "changes_requested": OutcomeVerdict.CHANGES_REQUESTED,
        }.get(state)
        if mapped is not None:
            return GithubDelivery(mapped, url=url, note=f"review {state}")
        return GithubDelivery(ignored=f"a {state or 'commented'} review is not a verdict")
    return GithubDelivery(ignored=f"{event} {action} is not a verdict")


def github_event_record(customer: Customer, event: str, payload: dict[str, Any]) -> GithubDelivery:
    """Record the verdict an event maps to on every job (at most GITHUB_JOBS_PER_EVENT)
    whose result names that pull request, as source `github`."""
    delivery = github_event_verdict(event, payload)
    if delivery.verdict is None:
        return delivery
    job_ids = list(
        Job.objects.filter(customer=customer, pull_request=delivery.url[:PULL_REQUEST_URL_MAX])
        .order_by("-id")
        .values_list("pk", flat=True)[:GITHUB_JOBS_PER_EVENT]
    )
    if not job_ids:
        delivery.ignored = "no job's result names this pull request"
    for job_id in job_ids:
        job_outcome_report(
            customer=customer,
            job_id=job_id,
            verdict=delivery.verdict,
            source=GITHUB_SOURCE,
            url=delivery.url,
            note=delivery.note,
            actor=GITHUB_ACTOR,
        )
    delivery.job_ids = job_ids
    return delivery
