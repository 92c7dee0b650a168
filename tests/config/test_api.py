import pytest


def test_api_docs_render_from_our_own_static_files(client):
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    html = page.content.decode()
    assert "swagger" in html.lower()
    assert "cdn" not in html.lower()
    assert "https://" not in html.replace("https://swagger", "")


def test_openapi_document_is_served(client):
    doc = client.get("/api/v1/openapi.json").json()
    assert doc["info"]["title"] == "Agentina Control Plane API"
    assert "/api/v1/health" in doc["paths"]


@pytest.mark.django_db
def test_health_answers_without_the_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert client.get("/api/v1/health").json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v1/health/../../etc/passwd"])
def test_unknown_api_paths_are_404_not_500(client, path):
    assert client.get(path).status_code == 404
