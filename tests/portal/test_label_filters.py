"""Hosts, the dashboard's role table and jobs filter by label (agents do too, see
test_agents_page): "key=value" or a bare key, another customer's labelled agents never
counted, text that is no label matching nothing rather than failing."""

import pytest
from django.urls import reverse

from fleet.choices import JobStatus
from fleet.selectors import host_list, role_numbers
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet(customer, other_customer):
    factories.license(customer, max_agents=20)
    gpu_host = factories.host(customer, hostname="gpu-box")
    gpus = [factories.agent(customer, host=gpu_host, labels={"gpu": "a100"}) for _ in range(2)]
    factories.agent(customer, host=gpu_host, labels={"gpu": "h100"})
    factories.agent(customer, host=factories.host(customer, hostname="plain-box"))
    factories.job(customer, role="coder", required_labels={"gpu": "a100"})
    factories.job(customer, role="coder")
    factories.job(
        customer,
        role="coder",
        status=JobStatus.RUNNING,
        agent=gpus[0],
        required_labels={"gpu": "a100"},
    )
    factories.license(other_customer)
    factories.agent(
        other_customer,
        labels={"gpu": "a100"},
        host=factories.host(other_customer, hostname="their-gpu-box"),
    )
    return customer


def coder(numbers):
    return next(r for r in numbers if r.role == "coder")


def test_the_role_numbers_of_a_label(fleet):
    everyone = coder(role_numbers(fleet))
    a100 = coder(role_numbers(fleet, label="gpu=a100"))
    any_gpu = coder(role_numbers(fleet, label="gpu"))
    assert (everyone.agents, everyone.queued, everyone.running, everyone.busy) == (4, 2, 1, 1)
    assert (a100.agents, a100.queued, a100.running, a100.busy) == (2, 1, 1, 1)
    assert (any_gpu.agents, any_gpu.busy) == (3, 1)
    assert coder(role_numbers(fleet, label="not a label!")).agents == 0


def test_hosts_filter_by_label(owner, fleet):
    assert [h.hostname for h in host_list(fleet, label="gpu=a100")] == ["gpu-box"]
    assert [h.hostname for h in host_list(fleet, label="gpu=t4")] == []
    page = owner.get(reverse("portal:hosts"), {"label": "gpu=a100"}).content.decode()
    assert "gpu-box" in page and "plain-box" not in page and "their-gpu-box" not in page
    assert "<td>3</td>" in page  # the host's whole count, for its memory budget
    empty = owner.get(reverse("portal:hosts"), {"label": "gpu=t4"}).content.decode()
    assert "No host runs an agent labelled" in empty
    assert owner.get(reverse("portal:hosts"), {"label": "a\x00b"}).status_code == 200


def test_the_dashboard_role_table_filters_by_label_and_its_poll_keeps_it(owner, fleet):
    page = owner.get(reverse("portal:dashboard"), {"label": "gpu=a100"}).content.decode()
    assert 'hx-get="/portal/?label=gpu%3Da100&amp;range=24h"' in page
    assert "agents labelled <code>gpu=a100</code>" in page
    assert '<tr data-role="coder"><td>Coder</td><td>2 of 2' in page
    whole = owner.get(reverse("portal:dashboard")).content.decode()
    assert '<tr data-role="coder"><td>Coder</td><td>4 of 4' in whole
