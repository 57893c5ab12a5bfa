"""The workload identity usage's reservation tests call with."""

from __future__ import annotations

import pytest

from coder.tests.services.usage.factories import SPENDER
from coder.tests.support.platform import Platform
from coder.tests.support.tokens import TestSigner


@pytest.fixture
def spender(
    platform: Platform, signer: TestSigner, org: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Headers of a workload token: SPENDER, granted usage:reserve, acting for a user of `org` (the
    platform knows SPENDER's descriptor for this test only)."""
    monkeypatch.setitem(platform.runtime.descriptors, SPENDER.name, SPENDER)
    return signer.workload_headers(org, audience="usage", caller=SPENDER.name)
