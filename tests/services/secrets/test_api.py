"""secrets through the gateway path `/api/secrets`, against both backends."""

from __future__ import annotations

import base64
import json
import logging
import os
import uuid
from typing import Any

import pytest
from sqlalchemy import select, text

from coder.services.secrets.config import SecretsSettings
from coder.services.secrets.models import SecretVersion
from coder.shared.events import CloudEvent
from coder.tests.support.logscan import CANARY
from coder.tests.support.platform import Platform, wait_until
from coder.tests.support.tokens import TestSigner

API = "/api/secrets/v1"


def path_unique() -> str:
    return f"providers/openai-{uuid.uuid4().hex[:6]}"


async def put(p: Platform, h: dict[str, str], path: str, data: dict[str, Any], **params: Any):
    body: dict[str, Any] = {"data": data}
    if "cas" in params:
        body["options"] = {"cas": params.pop("cas")}
    return await p.client.put(f"{API}/secrets/{path}", json=body, headers=h, params=params)


async def test_versions_read_and_check_and_set(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    path = path_unique()
    first = await put(platform, h, path, {"api_key": "sk-1"}, cas=0)
    assert first.status_code == 200, first.text
    assert first.json()["version"] == 1
    assert (await put(platform, h, path, {"api_key": "sk-2"}, cas=1)).json()["version"] == 2

    stale = await put(platform, h, path, {"api_key": "sk-3"}, cas=1)
    assert stale.status_code == 409
    assert stale.json()["type"].endswith("/cas-mismatch")
    assert stale.json()["current_version"] == 2

    current = (await platform.client.get(f"{API}/secrets/{path}", headers=h)).json()
    assert current["data"] == {"api_key": "sk-2"} and current["metadata"]["version"] == 2
    old = (await platform.client.get(f"{API}/secrets/{path}", params={"version": 1}, headers=h)).json()
    assert old["data"] == {"api_key": "sk-1"}


async def test_scopes_are_separate(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    path = path_unique()
    await put(platform, h, path, {"v": "org"})
    await put(platform, h, path, {"v": "prod"}, project="ide", environment="production")
    org_level = await platform.client.get(f"{API}/secrets/{path}", headers=h)
    prod = await platform.client.get(
        f"{API}/secrets/{path}", headers=h, params={"project": "ide", "environment": "production"}
    )
    staging = await platform.client.get(
        f"{API}/secrets/{path}", headers=h, params={"project": "ide", "environment": "staging"}
    )
    assert org_level.json()["data"] == {"v": "org"}
    assert prod.json()["data"] == {"v": "prod"}
    assert staging.status_code == 404


async def test_soft_delete_undelete_destroy(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    path = path_unique()
    await put(platform, h, path, {"k": "one"})
    await put(platform, h, path, {"k": "two"})

    assert (await platform.client.delete(f"{API}/secrets/{path}", headers=h)).status_code == 204
    gone = await platform.client.get(f"{API}/secrets/{path}", headers=h)
    assert gone.status_code == 404
    assert gone.json()["metadata"]["deletion_time"] is not None

    assert (
        await platform.client.post(f"{API}/undelete/{path}", json={"versions": [2]}, headers=h)
    ).status_code == 204
    assert (await platform.client.get(f"{API}/secrets/{path}", headers=h)).json()["data"] == {"k": "two"}

    assert (
        await platform.client.post(f"{API}/destroy/{path}", json={"versions": [1]}, headers=h)
    ).status_code == 204
    destroyed = await platform.client.get(f"{API}/secrets/{path}", params={"version": 1}, headers=h)
    assert destroyed.status_code == 404 and destroyed.json()["metadata"]["destroyed"] is True
    # Undelete cannot bring back a destroyed version.
    await platform.client.post(f"{API}/undelete/{path}", json={"versions": [1]}, headers=h)
    assert (
        await platform.client.get(f"{API}/secrets/{path}", params={"version": 1}, headers=h)
    ).status_code == 404

    meta = (await platform.client.get(f"{API}/metadata/{path}", headers=h)).json()
    assert meta["current_version"] == 2
    assert meta["versions"]["1"]["destroyed"] is True and meta["versions"]["2"]["deletion_time"] is None

    assert (await platform.client.delete(f"{API}/metadata/{path}", headers=h)).status_code == 204
    assert (await platform.client.get(f"{API}/metadata/{path}", headers=h)).status_code == 404


async def test_metadata_max_versions_and_cas_required(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org)
    path = path_unique()
    for i in range(3):
        await put(platform, h, path, {"i": i})
    patched = await platform.client.patch(
        f"{API}/metadata/{path}",
        headers=h,
        json={"max_versions": 2, "cas_required": True, "custom_metadata": {"owner": "platform-team"}},
    )
    assert patched.status_code == 200, patched.text
    assert sorted(patched.json()["versions"]) == ["2", "3"]
    assert patched.json()["custom_metadata"] == {"owner": "platform-team"}

    without_cas = await put(platform, h, path, {"i": 4})
    assert without_cas.status_code == 422
    assert without_cas.json()["errors"][0]["field"] == "options.cas"
    assert (await put(platform, h, path, {"i": 4}, cas=3)).status_code == 200
    assert (
        await platform.client.get(f"{API}/secrets/{path}", params={"version": 2}, headers=h)
    ).status_code == 404


async def test_list_paths_paginates_without_values(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    for name in ("a", "b", "c", "d", "e"):
        await put(platform, h, f"team/{name}", {"secret": name})
    await put(platform, h, "other/x", {"secret": "x"})
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"prefix": "team/", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = (await platform.client.get(f"{API}/metadata", params=params, headers=h)).json()
        seen += [item["path"] for item in body["items"]]
        assert all("secret" not in json.dumps(item) for item in body["items"])
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == [f"team/{n}" for n in "abcde"]


async def test_values_encrypted_at_rest_and_never_logged(
    platform: Platform, signer: TestSigner, org: str, caplog: pytest.LogCaptureFixture
) -> None:
    h = signer.headers(org)
    path = path_unique()
    marker = f"{CANARY}-{uuid.uuid4().hex}"  # the run's log scan fails if this reaches any log line
    with caplog.at_level(logging.DEBUG):
        await put(platform, h, path, {"api_key": marker})
        await platform.client.get(f"{API}/secrets/{path}", headers=h)
    assert marker not in caplog.text
    async with platform.runtime.sessions() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT v.ciphertext, v.wrapped_key FROM secrets_version v JOIN secrets_secret s ON s.id = v.secret_id "
                    "WHERE s.org_id = :org"
                ),
                {"org": org},
            )
        ).all()
    assert rows and all(marker.encode() not in bytes(r.ciphertext) for r in rows)


async def test_ciphertext_is_bound_to_its_location(platform: Platform, signer: TestSigner, org: str) -> None:
    """Copying a ciphertext to another secret must not decrypt there (AES-GCM associated data)."""
    h = signer.headers(org)
    source, target = path_unique(), path_unique()
    await put(platform, h, source, {"k": "source"})
    await put(platform, h, target, {"k": "target"})
    async with platform.runtime.sessions() as session, session.begin():
        await session.execute(
            text(
                "UPDATE secrets_version t SET ciphertext = s.ciphertext, wrapped_key = s.wrapped_key "
                "FROM secrets_version s, secrets_secret ss, secrets_secret ts "
                "WHERE s.secret_id = ss.id AND t.secret_id = ts.id AND ss.org_id = :org AND ts.org_id = :org "
                "AND ss.path = :source AND ts.path = :target"
            ),
            {"org": org, "source": source, "target": target},
        )
    response = await platform.client.get(f"{API}/secrets/{target}", headers=h)
    assert response.status_code == 500
    assert response.json()["type"].endswith("/secrets-key-unavailable")


async def test_reads_are_audited(platform: Platform, signer: TestSigner, org: str) -> None:
    path = path_unique()
    writer = signer.headers(org, sub="alice")
    reader = signer.headers(org, perms=["secrets:read"], sub="bob")
    await put(platform, writer, path, {"k": "v"})
    await platform.client.get(f"{API}/secrets/{path}", headers=reader)
    audit = (await platform.client.get(f"{API}/audit", params={"path": path}, headers=writer)).json()["items"]
    assert [(e["actor"], e["action"], e["version"]) for e in audit] == [
        ("bob", "read", 1),
        ("alice", "write", 1),
    ]
    assert all(e["request_id"] for e in audit)
    # The audit trail itself needs its own permission.
    assert (await platform.client.get(f"{API}/audit", headers=reader)).status_code == 403


async def test_rotation_event_is_published(platform: Platform, signer: TestSigner, org: str) -> None:
    received: list[CloudEvent] = []

    async def deliver(event: CloudEvent) -> None:
        if event.orgid == org:
            received.append(event)

    assert platform.runtime.bus is not None
    await platform.runtime.bus.consume(f"test-{uuid.uuid4().hex[:8]}", ["secrets.secret.rotated"], deliver)
    h = signer.headers(org)
    path = path_unique()
    await put(platform, h, path, {"k": 1})
    await put(platform, h, path, {"k": 2})
    await wait_until(lambda: received, what="secrets.secret.rotated")
    assert received[0].type == "secrets.secret.rotated"
    assert received[0].data == {"project": "", "environment": "", "path": path, "version": 2}
    assert "k" not in json.dumps(received[0].data)


async def test_master_key_rotation_rewraps(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    path = path_unique()
    await put(platform, h, path, {"k": "before rotation"})
    settings = platform.runtime.config(SecretsSettings)
    new_key = base64.b64encode(os.urandom(32)).decode()
    keyring = {**json.loads(settings.master_keys), "k2": new_key}
    original = (settings.master_keys, settings.active_key_id)
    settings.master_keys, settings.active_key_id = json.dumps(keyring), "k2"
    try:
        result = await platform.client.post(f"{API}/keys/rewrap", headers=h)
        assert result.status_code == 200 and result.json()["rewrapped"] >= 1
        async with platform.runtime.sessions() as session:
            key_ids = set(
                (
                    await session.execute(
                        select(SecretVersion.key_id)
                        .where(SecretVersion.key_id.is_not(None))
                        .where(text("secret_id IN (SELECT id FROM secrets_secret WHERE org_id = :org)")),
                        {"org": org},
                    )
                ).scalars()
            )
        assert key_ids == {"k2"}
        # The old key can now be dropped from the keyring: values still open.
        settings.master_keys = json.dumps({"k2": new_key})
        assert (await platform.client.get(f"{API}/secrets/{path}", headers=h)).json()["data"] == {
            "k": "before rotation"
        }
    finally:
        settings.master_keys, settings.active_key_id = original


async def test_permissions_are_enforced(platform: Platform, signer: TestSigner, org: str) -> None:
    path = path_unique()
    await put(platform, signer.headers(org), path, {"k": "v"})
    reader = signer.headers(org, perms=["secrets:read"])
    assert (await put(platform, reader, path, {"k": "w"})).status_code == 403
    assert (
        await platform.client.post(f"{API}/destroy/{path}", json={"versions": [1]}, headers=reader)
    ).status_code == 403
    assert (await platform.client.get(f"{API}/secrets/{path}")).status_code == 401
    expired = signer.headers(org, ttl=-60)
    response = await platform.client.get(f"{API}/secrets/{path}", headers=expired)
    assert response.status_code == 401 and response.json()["detail"] == "token expired"
    forged = TestSigner(kid=signer.kid).headers(org)
    assert (await platform.client.get(f"{API}/secrets/{path}", headers=forged)).status_code == 401


async def test_another_org_gets_404_everywhere(platform: Platform, signer: TestSigner, org: str) -> None:
    path = path_unique()
    await put(platform, signer.headers(org), path, {"k": "v"})
    intruder = signer.headers(f"other-{org}")  # every permission, wrong organization
    attempts = [
        ("GET", f"/secrets/{path}", None),
        ("DELETE", f"/secrets/{path}", None),
        ("POST", f"/delete/{path}", {"versions": [1]}),
        ("POST", f"/undelete/{path}", {"versions": [1]}),
        ("POST", f"/destroy/{path}", {"versions": [1]}),
        ("GET", f"/metadata/{path}", None),
        ("PATCH", f"/metadata/{path}", {"max_versions": 3}),
        ("DELETE", f"/metadata/{path}", None),
    ]
    for method, url, body in attempts:
        response = await platform.client.request(method, API + url, json=body, headers=intruder)
        assert response.status_code == 404, (method, url, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    listing = await platform.client.get(f"{API}/metadata", headers=intruder)
    assert listing.json()["items"] == []
    audit = await platform.client.get(f"{API}/audit", headers=intruder)
    assert audit.json()["items"] == []
    # Writing the same path in the other org creates that org's own secret; the original is untouched.
    await put(platform, intruder, path, {"k": "theirs"})
    mine = await platform.client.get(f"{API}/secrets/{path}", headers=signer.headers(org))
    assert mine.json()["data"] == {"k": "v"} and mine.json()["metadata"]["version"] == 1


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ('"a\\u0000b"', "NUL"),
        ('"a\\ud800b"', "UTF-8"),
        ("NaN", "finite"),
        ("Infinity", "finite"),
        ("1e400", "finite"),
    ],
)
async def test_an_unreadable_value_is_refused_and_the_stored_version_stays(
    platform: Platform, signer: TestSigner, org: str, value: str, why: str
) -> None:
    h = signer.headers(org)
    path = path_unique()
    assert (await put(platform, h, path, {"k": "kept", "n": 1.5})).status_code == 200
    body = '{"data": {"k": %s}}' % value  # noqa: UP031 - JSON braces
    refused = await platform.client.put(
        f"{API}/secrets/{path}", content=body, headers={**h, "content-type": "application/json"}
    )
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    errors = refused.json()["errors"]
    assert [e["field"] for e in errors] == ["body.data.k"] and why in errors[0]["message"], errors
    current = await platform.client.get(f"{API}/secrets/{path}", headers=h)
    assert current.status_code == 200, current.text
    assert current.json()["data"] == {"k": "kept", "n": 1.5} and current.json()["metadata"]["version"] == 1


@pytest.mark.parametrize("value", ["%00", "a%00b", "%ED%A0%80", "%FF"])
async def test_a_query_filter_that_is_not_text_is_named(
    platform: Platform, signer: TestSigner, org: str, value: str
) -> None:
    response = await platform.client.get(f"{API}/audit?path={value}", headers=signer.headers(org))
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["query.path"]


async def test_a_forged_cursor_is_a_400_naming_it(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    await put(platform, h, path_unique(), {"k": "v"})
    forged = base64.urlsafe_b64encode(json.dumps([12, str(uuid.uuid4())]).encode()).decode()
    for url in (f"{API}/audit", f"{API}/metadata"):
        response = await platform.client.get(url, params={"cursor": forged}, headers=h)
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert [e["field"] for e in response.json()["errors"]] == ["query.cursor"]
