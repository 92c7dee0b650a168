import re
from datetime import timedelta
from decimal import Decimal
from typing import Any, cast

from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.db.models import QuerySet
from django.http import QueryDict

from fleet.choices import (
    AgentRole,
    AlertChannelKind,
    AlertEventType,
    AnomalySeverity,
    ApiKeyScope,
    BulkActionKind,
    Channel,
    MemberRole,
)
from fleet.labels import labels_parse
from fleet.models import Agent, Release
from fleet.policy import (
    AGENT_PAUSE_REASON_MAX,
    AGENT_PAUSE_TIMEOUT_MAX,
    BATCH_WATCH_MAX_MINUTES,
    CANARY_SOAK_MAX_HOURS,
    JOB_MAX_RUNTIME_LIMIT,
    TOKEN_LIFETIME,
    TOKEN_LIFETIME_MAX,
    TOKENS_PER_MINT_MAX,
    WAVE,
)

ROLE_CHOICES = [("", "Any role"), *AgentRole.choices]
API_KEY_LIFETIME_MAX_DAYS = 3650


class LabelsField(forms.CharField):
    """Labels as operators type them: "gpu=a100, os=linux"."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("max_length", 4000)
        kwargs.setdefault("widget", forms.TextInput(attrs={"placeholder": "gpu=a100, os=linux"}))
        super().__init__(**kwargs)

    def clean(self, value: Any) -> dict[str, str]:
        text = super().clean(value) or ""
        if "\x00" in text:
            raise forms.ValidationError("Labels must not contain NUL bytes.")
        try:
            return labels_parse(text)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc


class NamesField(forms.CharField):
    """Names as operators type them: "zone-a, zone-b" (commas or spaces between)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("max_length", 4000)
        kwargs.setdefault("widget", forms.TextInput(attrs={"placeholder": "a, b"}))
        super().__init__(**kwargs)

    def clean(self, value: Any) -> list[str]:
        text = (super().clean(value) or "").replace("\x00", "")
        return sorted({name for name in re.split(r"[,\s]+", text) if name})


class MintTokensForm(forms.Form):
    count = forms.IntegerField(
        min_value=1,
        max_value=TOKENS_PER_MINT_MAX,
        initial=1,
        help_text="One token per machine you will enroll.",
    )
    role = forms.ChoiceField(choices=ROLE_CHOICES, required=False)
    expires_in_days = forms.IntegerField(
        min_value=1, max_value=TOKEN_LIFETIME_MAX.days, initial=TOKEN_LIFETIME.days
    )
    note = forms.CharField(max_length=200, required=False)
    labels = LabelsField(help_text="Every agent from these tokens gets them, e.g. gpu=a100.")
    ephemeral = forms.BooleanField(
        required=False,
        help_text="Ephemeral: each agent is retired after its first job, or when it exits "
        "cleanly, and its seat frees at once (autoscaling, CI runners).",
    )

    def clean_note(self) -> str:
        return self.cleaned_data["note"].replace("\x00", "")


class SubmitJobForm(forms.Form):
    role = forms.ChoiceField(choices=AgentRole.choices)
    repo = forms.CharField(max_length=500)
    ref = forms.CharField(max_length=255, initial="main")
    task = forms.CharField(max_length=10_000, widget=forms.Textarea(attrs={"rows": 3}))
    priority = forms.IntegerField(min_value=-100, max_value=100, initial=0)
    required_labels = LabelsField(
        label="Requires labels", help_text="Only agents with these labels claim it."
    )


class NoteForm(forms.Form):
    note = forms.CharField(
        max_length=2000, widget=forms.TextInput(attrs={"placeholder": "What you did, or why"})
    )


class AgentLabelsForm(forms.Form):
    labels = LabelsField(
        help_text="key=value pairs; jobs that require labels go only to agents that have them."
    )


class AgentUpdatePinForm(forms.Form):
    channel = forms.ChoiceField(
        choices=[("", "Its license's channel"), *Channel.choices],
        required=False,
        label="Channel",
    )
    version = forms.CharField(
        max_length=64,
        required=False,
        label="Version",
        widget=forms.TextInput(attrs={"placeholder": "e.g. 1.10.0; empty: no pin"}),
        help_text="Pinned to a version, the agent is told of nothing newer and waves to "
        "other versions leave it out.",
    )


class BulkActionForm(forms.Form):
    kind = forms.ChoiceField(choices=BulkActionKind.choices, label="Action")
    reason = forms.CharField(
        max_length=AGENT_PAUSE_REASON_MAX,
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "Why (pause)"}),
    )
    labels = LabelsField(label="Labels to add")

    def clean_reason(self) -> str:
        return self.cleaned_data["reason"].replace("\x00", "").strip()


class PauseAgentForm(forms.Form):
    reason = forms.CharField(
        max_length=AGENT_PAUSE_REASON_MAX,
        widget=forms.TextInput(attrs={"placeholder": "Why: e.g. host maintenance"}),
    )
    timeout_minutes = forms.IntegerField(
        min_value=1,
        max_value=int(AGENT_PAUSE_TIMEOUT_MAX.total_seconds() // 60),
        required=False,
        widget=forms.NumberInput(attrs={"placeholder": "minutes (optional)"}),
        help_text="Resume by itself after this many minutes; empty: until resumed.",
    )
    drain = forms.BooleanField(
        required=False, help_text="Drain: pause once its running jobs finish."
    )

    def clean_reason(self) -> str:
        return self.cleaned_data["reason"].replace("\x00", "").strip()


class CustomerSettingsForm(forms.Form):
    """The customer's own policies (owners set them; the admin shows the same fields)."""

    stale_cleanup_days = forms.IntegerField(
        label="Clean up agents offline for",
        min_value=1,
        max_value=365,
        required=False,
        widget=forms.NumberInput(attrs={"placeholder": "days (empty: never)"}),
        help_text="Days without a heartbeat before beat decommissions an agent and frees its "
        "seat; listed on Agents a day before, restorable for 7 days. Empty: never.",
    )
    job_max_runtime_minutes = forms.IntegerField(
        label="Default job max runtime",
        min_value=1,
        max_value=int(JOB_MAX_RUNTIME_LIMIT.total_seconds() // 60),
        required=False,
        widget=forms.NumberInput(attrs={"placeholder": "minutes (empty: 6 hours)"}),
        help_text="A running job longer than this is told to stop and counted as timed out, "
        "unless it was submitted with its own max runtime.",
    )


WEEKDAYS = [(1, "Mon"), (2, "Tue"), (3, "Wed"), (4, "Thu"), (5, "Fri"), (6, "Sat"), (7, "Sun")]


class MaintenanceWindowForm(forms.Form):
    """When upgrade waves may start a step, in the customer's time zone."""

    time_zone = forms.CharField(
        max_length=64,
        initial="UTC",
        help_text="An IANA time zone, e.g. Europe/Berlin.",
    )
    days = forms.TypedMultipleChoiceField(
        choices=WEEKDAYS,
        coerce=int,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="No days: waves step at any time.",
    )
    start = forms.TimeField(
        required=False, widget=forms.TimeInput(attrs={"type": "time"}), label="From"
    )
    end = forms.TimeField(
        required=False,
        widget=forms.TimeInput(attrs={"type": "time"}),
        label="Until",
        help_text="Earlier than the start: the window runs past midnight.",
    )


class ApiKeyForm(forms.Form):
    """A key's name, scopes and expiry. A member may grant only the scopes whose writes
    their role makes on the portal (ApiKeyScope.owners_grant() takes an owner)."""

    name = forms.CharField(max_length=100, help_text="What the key is for, e.g. CI.")
    scopes = forms.MultipleChoiceField(
        choices=ApiKeyScope.choices,
        initial=[ApiKeyScope.READ],
        widget=forms.CheckboxSelectMultiple,
        help_text="What the key may do; an operation needing another scope is refused (403).",
    )
    expires_in_days = forms.IntegerField(
        label="Expires in",
        min_value=1,
        max_value=API_KEY_LIFETIME_MAX_DAYS,
        required=False,
        widget=forms.NumberInput(attrs={"placeholder": "days (empty: never)"}),
        help_text="Days until the key stops working; empty: until revoked.",
    )

    def __init__(self, *args: Any, owner: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not owner:
            field = cast(forms.MultipleChoiceField, self.fields["scopes"])
            field.choices = [
                (value, label)
                for value, label in ApiKeyScope.choices
                if value not in ApiKeyScope.owners_grant()
            ]
            field.help_text += " Only owners grant the rollouts and settings scopes."


class AlertChannelForm(forms.Form):
    """What the service needs; it checks URLs and addresses (one place for those rules)."""

    kind = forms.ChoiceField(choices=AlertChannelKind.choices)
    name = forms.CharField(max_length=100, required=False)
    url = forms.CharField(
        max_length=2000, required=False, label="URL", help_text="Webhook, Slack or PagerDuty."
    )
    email = forms.CharField(max_length=254, required=False, help_text="For email.")
    routing_key = forms.CharField(
        max_length=64, required=False, label="Routing key", help_text="PagerDuty's integration key."
    )
    min_severity = forms.ChoiceField(
        choices=AnomalySeverity.choices, initial=AnomalySeverity.INFO, label="Minimum severity"
    )
    events = forms.MultipleChoiceField(
        choices=AlertEventType.choices,
        required=False,
        widget=forms.SelectMultiple(attrs={"size": 5}),
        help_text="None chosen: every event.",
    )


class PlanForm(forms.Form):
    repo_loc = forms.IntegerField(
        min_value=1, max_value=100_000_000, label="Repository size", help_text="Lines of code."
    )


class AgentPickerInput(forms.TextInput):
    """Type part of a name; the options are the first matching agents, asked of the server
    as you type (htmx), never every agent of the fleet in the page."""

    def __init__(self, options_url: str) -> None:
        super().__init__(
            attrs={
                "list": "canary-options",
                "placeholder": "The healthiest online agent",
                "autocomplete": "off",
                "hx-get": options_url,
                "hx-trigger": "input changed delay:250ms, focus once",
                "hx-target": "#canary-options",
                "hx-swap": "innerHTML",
            }
        )


CANARY_CHOICE = re.compile(r"#(\d{1,18})\)?\s*$")  # "coder-3 (#123)", as the options read


class StartRolloutForm(forms.Form):
    release = forms.ModelChoiceField(queryset=Release.objects.none(), empty_label=None)
    canary = forms.CharField(
        required=False,
        max_length=250,
        help_text="Type to search the online agents; empty: the healthiest one.",
    )
    canary_soak_hours = forms.IntegerField(
        min_value=0,
        max_value=CANARY_SOAK_MAX_HOURS,
        initial=WAVE.canary_soak // timedelta(hours=1),
    )
    batch_percent = forms.IntegerField(
        min_value=1,
        max_value=99,
        initial=int(WAVE.batch_fraction * 100),
        help_text="Of the remaining agents, per batch.",
    )
    batch_watch_minutes = forms.IntegerField(
        min_value=0,
        max_value=BATCH_WATCH_MAX_MINUTES,
        initial=WAVE.batch_watch // timedelta(minutes=1),
    )
    online_floor_percent = forms.IntegerField(
        min_value=0,
        max_value=100,
        initial=int(WAVE.online_ratio_floor * 100),
        help_text="The share of the wave's agents that must be online for it to go on.",
    )
    scope_roles = forms.MultipleChoiceField(
        choices=AgentRole.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Roles",
        help_text="Scope: only these roles; none ticked: every role.",
    )
    scope_zones = NamesField(label="Zones", help_text="Scope: only these zones.")
    scope_hosts = NamesField(label="Hosts", help_text="Scope: only these hostnames.")
    scope_labels = LabelsField(label="Labels", help_text="Scope: only agents with every label.")
    acceptance_drop_percent = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=100,
        initial=int(WAVE.acceptance_drop_tolerance * 100),
        help_text="How much lower (relative) the upgraded agents' acceptance may be, once "
        "enough jobs were judged.",
    )
    cost_increase_percent = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=1000,
        initial=int(WAVE.cost_increase_tolerance * 100),
        help_text="How much higher their cost per accepted job may be.",
    )
    reason = forms.CharField(max_length=500)

    def __init__(
        self,
        data: QueryDict | None = None,
        *,
        releases: QuerySet[Release],
        agents: QuerySet[Agent],
        options_url: str,
    ) -> None:
        super().__init__(data)
        cast(forms.ModelChoiceField, self.fields["release"]).queryset = releases
        self.agents = agents
        self.fields["canary"].widget = AgentPickerInput(options_url)

    def clean_canary(self) -> Agent | None:
        """An option as the picker offers it ("name (#id)"), or a name one online agent
        has; one query either way."""
        text = self.cleaned_data["canary"].replace("\x00", "").strip()
        if not text:
            return None
        chosen = CANARY_CHOICE.search(text)
        if chosen:
            agent = self.agents.filter(pk=int(chosen.group(1))).first()
        else:
            named = list(self.agents.filter(name=text)[:2])
            if len(named) > 1:
                raise forms.ValidationError(f"Several online agents are named {text}: pick one.")
            agent = named[0] if named else None
        if agent is None:
            raise forms.ValidationError(f"No online agent matches {text}: pick one from the list.")
        return agent

    def settings(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "canary": data["canary"],
            "canary_soak": timedelta(hours=data["canary_soak_hours"]),
            "batch_fraction": Decimal(data["batch_percent"]) / 100,
            "batch_watch": timedelta(minutes=data["batch_watch_minutes"]),
            "online_ratio_floor": Decimal(data["online_floor_percent"]) / 100,
            "scope": {
                "role": data["scope_roles"],
                "zone": data["scope_zones"],
                "host": data["scope_hosts"],
                "labels": data["scope_labels"],
            },
            "acceptance_drop_tolerance": WAVE.acceptance_drop_tolerance
            if data["acceptance_drop_percent"] is None
            else Decimal(data["acceptance_drop_percent"]) / 100,
            "cost_increase_tolerance": WAVE.cost_increase_tolerance
            if data["cost_increase_percent"] is None
            else Decimal(data["cost_increase_percent"]) / 100,
        }


# --- members and sign-in --------------------------------------------------------------------


class InviteForm(forms.Form):
    email = forms.EmailField(max_length=254, help_text="The link goes there; it works once.")
    role = forms.ChoiceField(choices=MemberRole.choices, initial=MemberRole.VIEWER)


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=MemberRole.choices)


class TwoFactorPolicyForm(forms.Form):
    require_two_factor = forms.BooleanField(
        required=False, label="Require two-factor sign-in for every member"
    )


class CodeForm(forms.Form):
    """A 6-digit authenticator code, or a recovery code."""

    code = forms.CharField(
        max_length=64,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "autofocus": True, "spellcheck": "false"}
        ),
    )

    def clean_code(self) -> str:
        code = self.cleaned_data["code"].strip()
        if "\x00" in code:
            raise forms.ValidationError("That is not a code.")
        return code


class InvitationSignUpForm(UserCreationForm):
    """A new account for an invitation: a username and a password (Django's validators);
    the address is the invitation's."""

    def __init__(self, *args: Any, email: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instance.email = email  # the password may not resemble it either
