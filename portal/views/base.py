"""What every portal page shares: `member_view` resolves the member's customer before a
view runs and refuses viewers (or non-owners) the writes, so views never check roles;
the helpers build the context every page's header needs and pick "partial or page"."""

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Concatenate, ParamSpec, TypeVar, cast
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.models import User
from django.core.paginator import Page
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django_htmx.middleware import HtmxDetails

from fleet import selectors
from fleet.choices import MemberRole
from fleet.errors import NotFound
from fleet.models import Customer, Membership
from fleet.paging import CappedPaginator
from portal.forms import NoteForm
from portal.second_factor import redirect_to, user_is_verified, with_next

STEERING = (MemberRole.OWNER, MemberRole.ADMIN)  # mint, revoke, resolve, submit
SESSION_CUSTOMER = "portal_customer"
PAGE_SIZE = 50

P = ParamSpec("P")
M = TypeVar("M", bound=Model)


class HtmxRequest(HttpRequest):
    """Any request here: django-htmx's middleware sets `htmx` on each. For annotations
    only; Django never builds one."""

    htmx: HtmxDetails


class PortalRequest(HtmxRequest):
    """A request as `member_view` hands it to a view: signed in, with the membership it
    chose (its customer and role) and every membership, for the customer switcher. For
    annotations only; Django never builds one."""

    user: User
    membership: Membership
    memberships: list[Membership]


MemberView = Callable[Concatenate[PortalRequest, Customer, P], HttpResponse]
RoutedView = Callable[Concatenate[HtmxRequest, P], HttpResponse]


def _membership(request: PortalRequest) -> Membership | None:
    """The membership the session chose (or the first); every membership is kept on the
    request for the customer switcher."""
    memberships = list(selectors.membership_list(request.user))
    request.memberships = memberships
    chosen = request.session.get(SESSION_CUSTOMER)
    return next((m for m in memberships if m.customer_id == chosen), None) or (
        memberships[0] if memberships else None
    )


def member_view(
    *, steer: bool = False, owner: bool = False, posts_only: bool = False
) -> Callable[[MemberView[P]], RoutedView[P]]:
    """Log in, resolve the customer (a user without one sees what to do), and refuse
    viewers (or non-owners) the writes: every request, or with `posts_only` the POSTs of
    a page every member may read."""

    def wrap(view: MemberView[P]) -> RoutedView[P]:
        @wraps(view)
        def inner(request: HtmxRequest, *args: P.args, **kwargs: P.kwargs) -> HttpResponse:
            if not request.user.is_authenticated:
                login = f"{reverse('portal:login')}?next={request.path}"
                if request.htmx:
                    # A poll after the session ended: load the login page, not swap it in.
                    return HttpResponse(status=401, headers={"HX-Redirect": login})
                return redirect(login)
            # Signed in: from here on the request becomes what PortalRequest declares.
            member = cast(PortalRequest, request)
            membership = _membership(member)
            if membership is None:
                return render(request, "portal/no_customer.html")
            member.membership = membership
            if not user_is_verified(member.user) and any(
                m.customer.require_two_factor for m in member.memberships
            ):
                # A customer of theirs requires a second factor: set it up (or sign in
                # with it) before anything else; no query, the memberships are in hand.
                return redirect_to(with_next(reverse("portal:two_factor"), request), request)
            checked = request.method == "POST" or not posts_only
            if checked and (
                (owner and membership.role != MemberRole.OWNER)
                or (steer and membership.role not in STEERING)
            ):
                # The portal's own page: which role it takes, and whom to ask.
                needed = "an owner" if owner else "an owner or an admin"
                return render(request, "403.html", page_context(member, needed=needed), status=403)
            try:
                return view(member, membership.customer, *args, **kwargs)
            except NotFound as exc:
                raise Http404(exc.detail) from exc

        return inner

    return wrap


def label_filter(request: HttpRequest) -> str:
    """The `?label=` filter (key=value, or a bare key) as the pages take it: NUL-free, at
    most a label's length; text that is no label simply matches nothing."""
    return request.GET.get("label", "").replace("\x00", "").strip()[:130]


def page_context(request: PortalRequest, **extra: object) -> dict[str, object]:
    """What the header of every page needs: the customer, the switcher, the role."""
    membership = request.membership
    return {
        "membership": membership,
        "customer": membership.customer,
        "memberships": request.memberships,
        "can_steer": membership.role in STEERING,
        "is_owner": membership.role == MemberRole.OWNER,
        **extra,
    }


@dataclass(frozen=True)
class SortLink:
    """A sortable column's header: the query its link sets, and how the table is sorted
    by it now ("ascending", "descending", or "" when it is not)."""

    key: str
    label: str
    query: str
    direction: str


def query_string(**params: object) -> str:
    """The query of a list's link: the parameters that are set, urlencoded."""
    return urlencode({name: value for name, value in params.items() if value})


def sort_links(columns: dict[str, str], filters: dict[str, str]) -> list[SortLink]:
    """A header link for each sortable column (key → label), keeping the other filters:
    the first click sorts descending (newest, highest), the next one flips it."""
    links = []
    for key, label in columns.items():
        direction = {f"-{key}": "descending", key: "ascending"}.get(filters.get("sort", ""), "")
        flip = key if direction == "descending" else f"-{key}"
        links.append(SortLink(key, label, query_string(**{**filters, "sort": flip}), direction))
    return links


def paginate(request: HttpRequest, rows: QuerySet[M]) -> Page[M]:
    return CappedPaginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))


def partial_or_page(request: HtmxRequest, template: str, partial: str) -> str:
    """The inline partial an htmx request swaps in, else the whole page."""
    return f"{template}#{partial}" if request.htmx else template


def note_or_message(request: HttpRequest) -> str | None:
    """The note a steering action needs, or None with a message asking for one."""
    form = NoteForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Add a note: what you did, or why.")
        return None
    return form.cleaned_data["note"]
