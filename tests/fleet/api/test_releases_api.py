"""Agents download releases with their own secret: what a version is, its artifact
(resumable with Range), the key it is signed with; the heartbeat's upgrade order names
the same download without another query; a refused download pauses the wave."""

import hashlib

import pytest

from fleet.choices import AnomalyKind, RolloutState
from fleet.models import Anomaly, AuditEvent, Release, Rollout
from fleet.services.audit import SYSTEM
from fleet.services.releases import release_publish, release_yank
from fleet.services.rollouts import rollout_start
from tests.fleet.api.conftest import activate, beat
from tests.fleet.conftest import artifact_bytes, as_upload

pytestmark = pytest.mark.django_db
DATA = artifact_bytes("1.99.0", 700_000)


@pytest.fixture
def published(release_keys, licensed) -> Release:
    return release_publish(
        version="1.99.0",
        artifact=as_upload(DATA),
        signature=release_keys.sign("1.99.0", DATA),
        actor=SYSTEM,
    )


def body_of(response) -> bytes:
    return b"".join(response.streaming_content)


def test_an_agent_reads_a_release_and_downloads_its_artifact(agent, published, release_keys):
    info = agent.api.get("/releases/1.99.0")
    assert info.status_code == 200
    assert info.json() == {
        "version": "1.99.0",
        "channel": "stable",
        "sha256": hashlib.sha256(DATA).hexdigest(),
        "size": len(DATA),
        "signature": published.signature,
        "url": "/api/v1/releases/1.99.0/artifact",
    }
    whole = agent.api.get("/releases/1.99.0/artifact")
    assert whole.status_code == 200
    assert whole["Content-Length"] == str(len(DATA))
    assert whole["Accept-Ranges"] == "bytes"
    assert "no-store" in whole["Cache-Control"]
    assert body_of(whole) == DATA
    key = agent.api.get("/releases/signing-key")
    assert key.json() == {"algorithm": "ed25519", "public_key": release_keys.public}


def test_a_broken_download_resumes_with_range(agent, published):
    cut = 123_457
    first = body_of(agent.api.get("/releases/1.99.0/artifact"))[:cut]
    rest = agent.api.get("/releases/1.99.0/artifact", HTTP_RANGE=f"bytes={cut}-")
    assert rest.status_code == 206
    assert rest["Content-Range"] == f"bytes {cut}-{len(DATA) - 1}/{len(DATA)}"
    assert rest["Content-Length"] == str(len(DATA) - cut)
    assert first + body_of(rest) == DATA
    middle = agent.api.get("/releases/1.99.0/artifact", HTTP_RANGE="bytes=10-19")
    assert (middle.status_code, body_of(middle)) == (206, DATA[10:20])
    tail = agent.api.get("/releases/1.99.0/artifact", HTTP_RANGE="bytes=-5")
    assert (tail.status_code, body_of(tail)) == (206, DATA[-5:])
    padded = agent.api.get("/releases/1.99.0/artifact", HTTP_RANGE="bytes=" + "0" * 30 + "10-19")
    assert (padded.status_code, body_of(padded)) == (206, DATA[10:20])
    # Numbers past the end (even past int()'s digit limit) are clamped to it (RFC 9110).
    for huge in ("bytes=0-" + "9" * 5000, "bytes=-" + "9" * 5000):
        whole = agent.api.get("/releases/1.99.0/artifact", HTTP_RANGE=huge)
        assert (whole.status_code, body_of(whole)) == (206, DATA)


@pytest.mark.parametrize(
    "header",
    [
        f"bytes={len(DATA)}-",
        "bytes=500-100",
        "bytes=-0",
        "bytes=x-",
        "bytes=1-2,5-9",
        "bytes=" + "9" * 5000 + "-",  # past int()'s digit limit: not a 500
    ],
)
def test_a_range_outside_the_artifact_is_416(agent, published, header):
    refused = agent.api.get("/releases/1.99.0/artifact", HTTP_RANGE=header)
    assert refused.status_code == 416
    assert refused.json()["code"] == "range_not_satisfiable"
    assert refused["Content-Range"] == f"bytes */{len(DATA)}"


def test_downloads_need_an_agent_secret(anon, key_api, published):
    for path in ["/releases/1.99.0", "/releases/1.99.0/artifact", "/releases/signing-key"]:
        assert anon.get(path).status_code == 401
        assert key_api.get(path).status_code == 401  # an API key is not an agent


def test_any_customers_agent_downloads_the_same_global_release(published, other_customer):
    from tests import factories

    factories.license(other_customer, max_agents=2)
    stranger = activate(other_customer)
    assert body_of(stranger.api.get("/releases/1.99.0/artifact")) == DATA


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/releases/..%2F..%2Fetc%2Fpasswd/artifact", 404),
        ("/releases/../artifact", 422),
        ("/releases/..%2Fx", 404),
        ("/releases/1.99.0%00/artifact", 422),
        ("/releases/..", 422),
        ("/releases/latest/artifact", 422),
        ("/releases/2.0.0/artifact", 404),
        ("/releases/1.10.0/artifact", 404),  # published without an artifact
    ],
)
def test_a_version_is_never_a_path(agent, published, path, status):
    response = agent.api.get(path)
    assert response.status_code == status, response.content
    assert response.json()["code"] in {"not_found", "release_not_found", "invalid_version"}


def test_a_yanked_release_is_not_served(agent, published):
    release_yank(release=published, reason="bad build", actor=SYSTEM)
    gone = agent.api.get("/releases/1.99.0/artifact")
    assert (gone.status_code, gone.json()["code"]) == (404, "release_not_found")


def test_the_upgrade_order_names_the_download_without_another_query(
    licensed, published, django_assert_num_queries
):
    agents = [activate(licensed) for _ in range(3)]
    rollout = rollout_start(customer=licensed, release=published, actor=SYSTEM)
    canary = next(a for a in agents if a.agent.pk == rollout.canary_agent_id)
    order = beat(canary).json()["upgrade"]
    assert order == {
        "version": "1.99.0",
        "rollout_id": rollout.pk,
        "drain": True,
        "sha256": published.sha256,
        "size": len(DATA),
        "signature": published.signature,
        "url": "/api/v1/releases/1.99.0/artifact",
    }
    beat(canary)
    with django_assert_num_queries(1):  # as any steady beat: its own UPDATE
        assert beat(canary, load=0.2).json()["upgrade"] == order


def test_an_order_for_a_release_without_an_artifact_has_no_download(licensed):
    agents = [activate(licensed) for _ in range(2)]
    release = Release.objects.get(version="1.10.0")
    rollout = rollout_start(customer=licensed, release=release, actor=SYSTEM)
    canary = next(a for a in agents if a.agent.pk == rollout.canary_agent_id)
    order = beat(canary).json()["upgrade"]
    assert order["version"] == "1.10.0"
    assert (order["sha256"], order["size"], order["signature"], order["url"]) == (None,) * 4


def test_a_refused_download_pauses_the_wave_and_the_agent_keeps_its_version(licensed, published):
    agents = [activate(licensed) for _ in range(3)]
    rollout = rollout_start(customer=licensed, release=published, actor=SYSTEM)
    canary = next(a for a in agents if a.agent.pk == rollout.canary_agent_id)
    beat(canary)
    report = canary.api.post(
        "/agents/upgrade-result",
        {
            "outcome": "verify_failed",
            "from_version": "1.9.3",
            "to_version": "1.99.0",
            "detail": "sha256 mismatch",
        },
    )
    assert report.status_code == 200
    rollout = Rollout.objects.get()
    assert rollout.state == RolloutState.PAUSED
    assert "verify_failed and kept running 1.9.3" in rollout.paused_reason
    assert canary.refresh().version == "1.9.3"
    finding = Anomaly.objects.get(kind=AnomalyKind.ROLLBACK)
    assert "refused the download of 1.99.0" in finding.message
    assert AuditEvent.objects.filter(action="agent.upgrade_verify_failed").count() == 1
    assert beat(canary).json()["upgrade"] is None  # nobody is offered it while paused


def test_a_two_level_rollback_is_recorded_with_the_version_it_runs(agent):
    report = agent.api.post(
        "/agents/upgrade-result",
        {
            "outcome": "start_failed",
            "from_version": "1.9.3",
            "to_version": "1.10.0",
            "rolled_back_to": "1.8.0",
            "rollback_level": "last_known_good",
        },
    )
    assert report.status_code == 200
    assert agent.refresh().version == "1.8.0"
    event = AuditEvent.objects.get(action="agent.upgrade_start_failed")
    assert event.changes["rollback_level"] == [None, "last_known_good"]
    assert "(its last known good)" in Anomaly.objects.get().message
    for bad in [
        {"rollback_level": "grandparent"},
        {"rolled_back_to": "../x"},
        {"detail": "x" * 2001},
    ]:
        refused = agent.api.post(
            "/agents/upgrade-result",
            {"outcome": "start_failed", "from_version": "1.9.3", "to_version": "1.10.0", **bad},
        )
        assert refused.status_code == 422, bad


def test_an_artifact_lost_from_storage_is_404_not_500(agent, published):
    published.artifact.storage.delete(published.artifact.name)
    lost = agent.api.get("/releases/1.99.0/artifact")
    assert (lost.status_code, lost.json()["code"]) == (404, "release_not_found")
