import pytest

from coder.runner import registry
from coder.tests.support.platform import Platform
from coder.tests.support.tokens import TestSigner

PROBLEM = "application/problem+json"


async def test_health_ready_metrics(platform: Platform) -> None:
    assert (await platform.client.get("/healthz")).json() == {"status": "ok"}
    ready = await platform.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["postgres"] == "ok"
    metrics = await platform.runtime.metrics.client("gateway").get("/metrics")
    assert "http_requests_total" in metrics.text


@pytest.mark.parametrize("path", ["/metrics", "/api/secrets/metrics", "/api/usage/metrics"])
async def test_metrics_are_not_on_the_public_port(
    platform: Platform, signer: TestSigner, org: str, path: str
) -> None:
    for headers in ({}, signer.headers(org)):
        answer = await platform.client.get(path, headers=headers)
        assert answer.status_code == 404, answer.text
        assert answer.headers["content-type"] == PROBLEM
        assert "http_requests_total" not in answer.text


async def test_proxied_requests_are_labelled_by_target_and_route_template(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    answer = await platform.client.get("/api/secrets/v1/secrets/some/path", headers=signer.headers(org))
    assert answer.status_code == 404, answer.text
    assert "x-coder-route" not in answer.headers  # the target names its route to the gateway only
    metrics = (await platform.runtime.metrics.client("gateway").get("/metrics")).text
    route = 'route="/api/secrets/v1/secrets/{path}"'
    assert f'http_requests_total{{method="GET",{route},status="404",target="gateway"}}' in metrics
    bucket = f'http_request_duration_seconds_bucket{{le="0.0005",method="GET",{route},target="gateway"}}'
    assert bucket in metrics


async def test_a_token_in_x_api_key_is_taken_as_anthropic_clients_send_it(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    token = signer.token(org, ("*",))
    answer = await platform.client.get("/api/secrets/v1/secrets/some/path", headers={"x-api-key": token})
    assert answer.status_code == 404, answer.text  # found nothing, as the caller it is
    refused = await platform.client.get("/api/secrets/v1/secrets/some/path", headers={"x-api-key": "nope"})
    assert refused.status_code == 401


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


@pytest.mark.parametrize("target", list(registry.PACKAGES))
async def test_every_operation_documents_its_problems(platform: Platform, target: str) -> None:
    """Each error answer is documented as what it is: problem+json with the shared `Problem` schema,
    with the statuses the operation's inputs and dependencies can really answer."""
    prefix = "" if target == "gateway" else f"/api/{target}"
    document = (await platform.client.get(f"{prefix}/openapi.json")).json()
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["Problem"]["required"]) == {"type", "title", "status"}
    assert {"field", "message", "code"} <= set(schemas["FieldError"]["properties"])
    checked = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            codes = {code for code in operation["responses"] if code >= "400"}
            for code in codes:
                content = operation["responses"][code]["content"]
                assert content == {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}, (
                    path,
                    code,
                )
            if operation.get("parameters") or "requestBody" in operation:
                assert "422" in codes, (method, path)
            if "{" in path:
                assert "404" in codes, (method, path)
            if "requestBody" in operation:
                assert {"400", "413"} <= codes, (method, path)
            if target == "gateway":
                assert "429" in codes, (method, path)
            else:  # every operation of a service needs a token and a permission
                assert {"401", "403"} <= codes, (method, path)
            checked += 1
    assert checked > 0
