"""The process app's lifespan: what it sets up for serving, and gives back at shutdown."""

from __future__ import annotations

import gc

from coder.runner.process import GC_THRESHOLD
from coder.tests.support.platform import make_settings, running
from coder.tests.support.tokens import TestSigner


async def test_startup_is_frozen_out_of_the_collector_while_serving_only(
    database_url: str, signer: TestSigner
) -> None:
    before = gc.get_threshold()
    gc.unfreeze()  # another platform of this session may be serving
    async with running(make_settings(database_url, signer), "inprocess", "usage") as platform:
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_THRESHOLD, *before[1:])
        assert (await platform.client.get("/healthz")).status_code == 200
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
