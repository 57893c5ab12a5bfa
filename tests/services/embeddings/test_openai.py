"""Through the gateway as a client sees it: the official `openai` SDK with a personal access token,
and the provider-backed models, computed by the ai service (here a fake speaking OpenAI's protocol)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import httpx2
import numpy as np
import openai
import pytest

from coder.runner import registry
from coder.runner.process import build_process_app
from coder.services.embeddings import local
from coder.shared.settings import PlatformSettings
from coder.tests.services.embeddings.fake_openai import FakeOpenAI, vector
from coder.tests.support.databases import create_database, drop_database
from coder.tests.support.platform import target_settings

PROVIDER_MODEL = "text-embedding-3-small"
MODELS = {PROVIDER_MODEL: {"source": "ai:openai-embeddings", "dimensions": 1536, "shortenable": True}}
SCOPES = ["embeddings:embed", "embeddings:read", "embeddings:write"]


@dataclass
class Setup:
    client: httpx.AsyncClient
    sdk: openai.AsyncOpenAI
    fake: FakeOpenAI
    token: str


@pytest.fixture(scope="module")
async def setup(database_url: str) -> AsyncIterator[Setup]:
    """The platform with the gateway's own tokens (a fresh database: the first sign-up founds an
    org), the fake ai, and the SDK holding a personal access token."""
    url = await create_database(database_url, "coder_emb")
    fake = FakeOpenAI()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EMBEDDINGS_MODELS", json.dumps(MODELS))
        settings = PlatformSettings.model_validate({"database_url": url, "environment": "test"})
        targets = registry.resolve("all")
        app = build_process_app(settings, targets, target_settings(targets))
    try:
        async with app.router.lifespan_context(app):
            # Served where the ai target would be: the embeddings target reaches it by its service client.
            app.state.runtime.local_apps["ai"] = fake.app()
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                signup = await client.post(
                    "/auth/signup",
                    json={
                        "email": "sdk@example.com",
                        "password": "correct horse battery staple",
                        "name": "sdk",
                        "organization": "SDK Inc",
                    },
                )
                assert signup.status_code == 201, signup.text
                session = {"Authorization": f"Bearer {signup.json()['access_token']}"}
                pat = await client.post(
                    "/auth/tokens",
                    json={"name": "sdk", "scopes": SCOPES, "expires_in_days": 1},
                    headers=session,
                )
                assert pat.status_code == 201, pat.text
                token = pat.json()["token"]
                # The SDK's own HTTP stack (httpx2), over the same in-process transport.
                async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)) as sdk_http:
                    sdk = openai.AsyncOpenAI(
                        base_url="http://testserver/api/embeddings/v1",
                        api_key=token,
                        http_client=sdk_http,
                        max_retries=0,
                    )
                    yield Setup(client, sdk, fake, token)
    finally:
        await drop_database(url)


async def test_the_openai_sdk_gets_embeddings_through_the_gateway(setup: Setup) -> None:
    texts = ["the openai SDK through the gateway", "with a personal access token"]
    answer = await setup.sdk.embeddings.create(model=local.NAME, input=texts)  # base64, as the SDK asks
    assert answer.model == local.NAME and len(answer.data) == 2
    vectors = np.array([d.embedding for d in answer.data], dtype=np.float32)
    assert np.allclose(vectors, local.LocalModel().embed_sync(texts).vectors, atol=1e-6)
    assert answer.usage.prompt_tokens > 0

    floats = await setup.sdk.embeddings.create(
        model=local.NAME, input=texts[0], dimensions=64, encoding_format="float"
    )
    assert np.allclose(floats.data[0].embedding, vectors[0][:64] / np.linalg.norm(vectors[0][:64]), atol=1e-6)

    listed = [m.id async for m in setup.sdk.models.list()]
    assert listed == [local.NAME, PROVIDER_MODEL]

    with pytest.raises(openai.UnprocessableEntityError) as refused:
        await setup.sdk.embeddings.create(model=local.NAME, input=[[1, 2, 3]])
    assert refused.value.body["errors"][0]["field"] == "body.input"  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError):
        await setup.sdk.with_options(api_key="cdr_pat_wrong").embeddings.create(model=local.NAME, input="x")


async def test_provider_models_go_through_ai_once_per_text(setup: Setup) -> None:
    setup.fake.requests.clear()
    texts = ["computed by a provider", "behind the ai service"]
    answer = await setup.sdk.embeddings.create(model=PROVIDER_MODEL, input=texts, dimensions=256)
    got = np.array([d.embedding for d in answer.data], dtype=np.float32)
    assert np.allclose(got, np.stack([vector(t, 256) for t in texts]), atol=1e-6)
    assert answer.usage.prompt_tokens == 8  # the provider's count

    [request] = setup.fake.requests
    assert request["body"] == {
        "model": "openai-embeddings",
        "input": texts,
        "encoding_format": "float",
        "dimensions": 256,
    }
    # ai is called as the user: a token the gateway signed for them, never the personal token itself.
    assert request["headers"]["authorization"].startswith("Bearer ey")
    assert setup.token not in request["headers"]["authorization"]

    again = await setup.sdk.embeddings.create(model=PROVIDER_MODEL, input=texts[::-1], dimensions=256)
    assert len(setup.fake.requests) == 1  # the cache answered
    assert np.allclose([d.embedding for d in again.data], got[::-1], atol=1e-6)


async def test_a_provider_collection(setup: Setup) -> None:
    setup.fake.requests.clear()
    client = setup.client
    h = {"Authorization": f"Bearer {setup.token}"}
    created = await client.post(
        "/api/embeddings/v1/collections", json={"name": "provider", "model": PROVIDER_MODEL}, headers=h
    )
    assert created.status_code == 201, created.text
    assert created.json()["dimensions"] == 1536
    items = [{"id": str(i), "text": f"document number {i}"} for i in range(5)]
    upserted = await client.put(
        "/api/embeddings/v1/collections/provider/items", json={"items": items}, headers=h
    )
    assert upserted.json() == {"upserted": 5, "embedded": 5}
    hits = await client.post(
        "/api/embeddings/v1/collections/provider/search",
        json={"query": "document number 3", "k": 2},
        headers=h,
    )
    assert hits.status_code == 200, hits.text
    assert hits.json()["data"][0]["id"] == "3" and hits.json()["data"][0]["score"] == pytest.approx(
        1.0, abs=1e-5
    )
    assert len(setup.fake.requests) == 1  # the query's text was cached by the upsert


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        (
            (403, {"type": "https://coderide.io/problems/forbidden", "status": 403, "detail": "no ai:embed"}),
            403,
        ),
        ((429, {"error": {"message": "Rate limit reached", "type": "requests"}}), 429),
        ((500, {"error": {"message": "boom"}}), 502),
        ((200, {"object": "list", "data": "not a list"}), 502),
    ],
)
async def test_provider_failures(setup: Setup, failure: tuple[int, dict], status: int) -> None:
    setup.fake.failure = failure
    try:
        response = await setup.client.post(
            "/api/embeddings/v1/embeddings",
            json={"model": PROVIDER_MODEL, "input": f"never cached {status} {failure[0]}"},
            headers={"Authorization": f"Bearer {setup.token}"},
        )
    finally:
        setup.fake.failure = None
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
