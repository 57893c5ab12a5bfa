"""The local model runs with the network unreachable: its weights and tokenizer come from the
installed `wordllama` package, nothing is fetched, and nothing is written to a cache directory.

The embedding runs in a child process in a network namespace of its own (`unshare --net`: only a
loopback interface, down), with a fresh HOME and no HF_* variables (so no offline switch helps it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from coder.services.embeddings import local

CHILD = """
import json, sys
from coder.services.embeddings import local
assert not local.model.loaded and "wordllama" not in sys.modules  # nothing loaded at import
result = local.model.embed_sync(["offline embedding works", "second text"])
print(json.dumps({"vectors": result.vectors.tolist(), "tokens": result.tokens}))
"""

# The library's own loader in the same sandbox: it looks for the bundled tokenizer in the wrong
# folder and goes to the Hugging Face hub for it. Why local.py builds the model from the files itself.
LIBRARY_LOADER = """
from wordllama import WordLlama
WordLlama.load()
"""


def _sandboxed(code: str, home: Path) -> subprocess.CompletedProcess[str]:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE", "TRANSFORMERS"))}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    probe = subprocess.run([unshare, "--net", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"the kernel refuses a network namespace here: {probe.stderr.strip()}")
    return subprocess.run(
        [unshare, "--net", sys.executable, "-P", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_the_local_model_embeds_with_the_network_unreachable(tmp_path: Path) -> None:
    done = _sandboxed(CHILD, tmp_path)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    vectors = np.array(answer["vectors"], dtype=np.float32)
    assert vectors.shape == (2, local.DIMENSIONS)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert all(tokens > 0 for tokens in answer["tokens"])
    # The same vectors as in this (networked) process: nothing else was loaded there.
    here = local.LocalModel().embed_sync(["offline embedding works", "second text"]).vectors
    assert np.allclose(vectors, here, atol=1e-6)
    assert list(tmp_path.rglob("*")) == []  # no cache directory filled


def test_the_library_loader_would_have_gone_online(tmp_path: Path) -> None:
    done = _sandboxed(LIBRARY_LOADER, tmp_path)
    assert done.returncode != 0
    assert "huggingface.co" in done.stderr or "Failed to download" in done.stderr, done.stderr
