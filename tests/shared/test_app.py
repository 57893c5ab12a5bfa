from coder.tests.conftest import Platform


async def test_health_ready_metrics(platform: Platform) -> None:
    assert (await platform.client.get("/healthz")).json() == {"status": "ok"}
    ready = await platform.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["postgres"] == "ok"
    metrics = await platform.client.get("/metrics")
    assert "http_requests_total" in metrics.text


async def test_unknown_target_is_problem_404(platform: Platform) -> None:
    response = await platform.client.get("/api/nope/v1/things")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/unknown-target")


async def test_target_openapi_through_gateway(platform: Platform) -> None:
    response = await platform.client.get("/api/secrets/openapi.json")
    assert response.status_code == 200
    assert "/v1/secrets/{path}" in response.json()["paths"]


async def test_problem_instance_is_the_gateway_path(platform: Platform) -> None:
    response = await platform.client.get("/api/secrets/v1/secrets/some/path")
    assert response.status_code == 401
    assert response.json()["instance"] == "/api/secrets/v1/secrets/some/path"
    servers = (await platform.client.get("/api/secrets/openapi.json")).json()["servers"]
    assert servers == [{"url": "/api/secrets"}]
