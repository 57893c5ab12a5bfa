"""The local default model: WordLlama's `l2_supercat` token codebook, 256 dimensions, shipped inside
the `wordllama` wheel (weights and tokenizer), run on the CPU with numpy.

Loaded from the package's own files only. `WordLlama.load()` is not used: it looks for the bundled
tokenizer under `tokenizer/` while the wheel ships it under `tokenizers/`, so it would fetch it from
the Hugging Face hub at run time (or fail with downloads disabled). Nothing here opens a connection;
tests/services/embeddings/test_offline.py proves it with the network unreachable.

The weights (16 MB of float16, 32 MB once widened) load on the first embedding, not at import, so a
process that never embeds stays small; loading and embedding run in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from wordllama.inference import WordLlamaInference

NAME = "wordllama-l2-supercat"
DIMENSIONS = 256
WEIGHTS = ("weights", "l2_supercat_256.safetensors")
TOKENIZER = ("tokenizers", "l2_supercat_tokenizer_config.json")
# Texts per numpy batch, as the library's own `embed`: the padded (batch, longest text, 256) block
# stays in cache; larger batches measured no faster.
BATCH = 64


@dataclass(frozen=True)
class Embedded:
    vectors: npt.NDArray[np.float32]  # (texts, DIMENSIONS), each row of unit length (or zero)
    tokens: list[int]  # tokens per text, for `usage`


class LocalModel:
    """One process-wide instance: the weights are read-only once loaded."""

    def __init__(self) -> None:
        self._model: WordLlamaInference | None = None
        self._lock = threading.Lock()
        # Texts run through the model since start: what the cache tests count.
        self.texts_embedded = 0

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self) -> WordLlamaInference:
        with self._lock:
            if self._model is None:
                from safetensors.numpy import load_file
                from tokenizers import Tokenizer

                # wordllama.inference calls logging.basicConfig(level=INFO) on import: undone, the
                # process's logging is the platform's.
                root = logging.getLogger()
                handlers, level = root.handlers[:], root.level
                from wordllama.inference import WordLlamaInference

                root.handlers[:], root.level = handlers, level

                package = files("wordllama")
                weights = load_file(str(package.joinpath(*WEIGHTS)))["embedding.weight"]
                tokenizer = Tokenizer.from_file(str(package.joinpath(*TOKENIZER)))
                self._model = WordLlamaInference(weights, tokenizer)
            return self._model

    def embed_sync(self, texts: list[str]) -> Embedded:
        """Mean-pooled, L2-normalised token vectors; a text with no known token gets a zero vector."""
        model = self._load()
        vectors = np.empty((len(texts), DIMENSIONS), dtype=np.float32)
        tokens: list[int] = []
        for start in range(0, len(texts), BATCH):
            chunk = texts[start : start + BATCH]
            encoded = model.tokenize(chunk)
            tokens.extend(sum(e.attention_mask) for e in encoded)
            ids = np.array([e.ids for e in encoded], dtype=np.int32)
            mask = np.array([e.attention_mask for e in encoded], dtype=np.float32)
            np.clip(ids, 0, model.embedding.shape[0] - 1, out=ids)
            # The masked sum over tokens as one batched matmul; normalising makes it the mean's direction.
            vectors[start : start + len(chunk)] = np.matmul(mask[:, None, :], model.embedding[ids])[:, 0, :]
        self.texts_embedded += len(texts)
        return Embedded(normalise(vectors), tokens)

    async def embed(self, texts: list[str]) -> Embedded:
        return await asyncio.to_thread(self.embed_sync, texts)


def normalise(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Rows scaled to unit length; a zero row stays zero (no NaN)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


model = LocalModel()
