import itertools
import secrets
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client

from fleet.models import Agent, Customer, CustomerApiKey
from fleet.services.api_keys import api_key_mint
from fleet.services.audit import SYSTEM
from fleet.services.tokens import token_mint
from tests import factories

_machines = itertools.count(1)


def bearer(secret: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


def activation_body(token: str, **overrides: Any) -> dict[str, Any]:
    """What a reference agent sends, with an install key of its own."""
    n = next(_machines)
    return {
        "install_key": secrets.token_urlsafe(32),
        "token": token,
        "machine_id": f"machine-{n}",
        "hostname": f"host-{n}",
        "zone": "eu-west-1a",
        "unit_name": "agentina@coder",
        "state_dir": "/var/lib/agentina/coder",
        "role": "coder",
        "version": "1.9.3",
        **overrides,
    }


@dataclass
class ApiClient:
    """Django's test client with JSON bodies and a bearer secret."""

    client: Client
    secret: str = ""

    def _auth(self, secret: str | None) -> dict[str, str]:
        chosen = self.secret if secret is None else secret
        return bearer(chosen) if chosen else {}

    def post(self, path: str, body: Any = None, *, secret: str | None = None, **extra: Any):
        return self.client.post(
            f"/api/v1{path}",
            body if body is not None else {},
            content_type="application/json",
            **self._auth(secret),
            **extra,
        )

    def get(self, path: str, *, secret: str | None = None, **extra: Any):
        return self.client.get(f"/api/v1{path}", **self._auth(secret), **extra)

    def put(self, path: str, body: Any = None, *, secret: str | None = None):
        return self.client.put(
            f"/api/v1{path}",
            body if body is not None else {},
            content_type="application/json",
            **self._auth(secret),
        )

    def delete(self, path: str, *, secret: str | None = None):
        return self.client.delete(f"/api/v1{path}", **self._auth(secret))


def walk(api: ApiClient, path: str, query: str = "") -> list[dict]:
    """Every page of a cursor-paged list, two rows a page, following `next` as given."""
    seen: list[dict] = []
    url: str | None = f"{path}?page_size=2&{query}"
    while url:
        response = api.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        seen += body["results"]
        url = body["next"] and body["next"].split("/api/v1", 1)[1]
    return seen


@dataclass
class ActivatedAgent:
    agent: Agent
    secret: str
    api: ApiClient

    def refresh(self) -> Agent:
        self.agent.refresh_from_db()
        return self.agent


def beat(agent: ActivatedAgent, **body: Any):
    """A heartbeat from `agent` on 1.9.3, with whatever else the test adds."""
    return agent.api.post("/agents/heartbeat", {"version": "1.9.3", **body})


@pytest.fixture
def licensed(customer: Customer) -> Customer:
    factories.license(customer, max_agents=10, max_concurrent_tasks_per_agent=2)
    factories.release("1.9.3")
    factories.release("1.10.0")
    return customer


@pytest.fixture
def anon(client: Client) -> ApiClient:
    return ApiClient(client)


@pytest.fixture
def key_api(licensed: Customer) -> ApiClient:
    _, secret = api_key_mint(customer=licensed, name="ci", actor=SYSTEM)
    return ApiClient(Client(), secret)


@pytest.fixture
def api_key(key_api: ApiClient) -> CustomerApiKey:
    return CustomerApiKey.objects.get()


def activate(customer: Customer, **overrides: Any) -> ActivatedAgent:
    """An agent activated through the API, as a real one would be."""
    _, token = token_mint(customer=customer, actor=SYSTEM)
    api = ApiClient(Client())
    response = api.post("/agents/activate", activation_body(token, **overrides))
    assert response.status_code == 201, response.content
    body = response.json()
    api.secret = body["agent_secret"]
    return ActivatedAgent(Agent.objects.get(pk=body["agent_id"]), body["agent_secret"], api)


@pytest.fixture
def agent(licensed: Customer) -> ActivatedAgent:
    return activate(licensed)
