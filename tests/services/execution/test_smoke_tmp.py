from coder.tests.services.execution.factories import output, run
from coder.tests.support.platform import Platform
from coder.tests.support.tokens import TestSigner


async def test_echo(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    job = await run(platform, h, command=["sh", "-c", "echo hi; id -u; echo err >&2"])
    assert job["outcome"] == "exited", job
    out = await output(platform, h, job["id"])
    assert out["stdout"].startswith("hi\n"), out
