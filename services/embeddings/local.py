"""The local default model: WordLlama's `l2_supercat` token codebook, 256 dimensions, shipped inside
the `wordllama` wheel (weights and tokenizer), run on the CPU with numpy.

Loaded from the package's own files only. `WordLlama.load()` is not used: it looks for the bundled
tokenizer under `tokenizer/` while the wheel ships it under `tokenizers/`, so it would fetch it from
the Hugging Face hub at run time (or fail with downloads disabled). Nothing here opens a connection;
tests/services/embeddings/test_offline.py proves it with the network unreachable.

The weights (16 MB of float16, 32 MB once widened) load on the first embedding, not at import, so a
process that never embeds stays small; loading and embedding run in a worker thread, off the event loop
(but for a short query: `INLINE_CHARS`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from wordllama.inference import WordLlamaInference

NAME = "wordllama-l2-supercat"
DIMENSIONS = 256
WEIGHTS = ("weights", "l2_supercat_256.safetensors")
TOKENIZER = ("tokenizers", "l2_supercat_tokenizer_config.json")
# Texts whose token vectors are gathered at a time (as the library's own `embed`): the block
# (their tokens, 256) stays in cache.
BATCH = 64
# Texts of at most this many characters in all (a search query) are embedded on the event loop:
# a fraction of a millisecond, less than the hop to a worker thread.
INLINE_CHARS = 500


@dataclass(frozen=True)
class Embedded:
    vectors: npt.NDArray[np.float32]  # (texts, DIMENSIONS), each row of unit length (or zero)
    tokens: list[int]  # tokens per text, for `usage`


class LocalModel:
    """One process-wide instance: the weights are read-only once loaded."""

    def __init__(self) -> None:
        self._model: WordLlamaInference | None = None
        self._tokenizer: Tokenizer | None = None
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
                # Its own copy: the library's pads every batch to its longest text.
                self._tokenizer = Tokenizer.from_file(str(package.joinpath(*TOKENIZER)))
                self._tokenizer.no_truncation()
            return self._model

    def embed_sync(self, texts: list[str]) -> Embedded:
        """Mean-pooled, L2-normalised token vectors; a text with no known token gets a zero vector.

        The texts are tokenized in one call, without offsets or padding (`encode_batch_fast`: the
        library's `embed` pads each batch and tracks offsets it never reads, which costs more than
        the rest of the model), and each text's token vectors summed in place (`np.add.reduceat`)."""
        model = self._load()
        assert self._tokenizer is not None
        encoded = self._tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        lengths = np.fromiter((len(e) for e in encoded), dtype=np.intp, count=len(texts))
        ids = np.fromiter(
            itertools.chain.from_iterable(e.ids for e in encoded), dtype=np.intp, count=int(lengths.sum())
        )
        np.clip(ids, 0, model.embedding.shape[0] - 1, out=ids)
        ends = np.cumsum(lengths)
        vectors = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        for start in range(0, len(texts), BATCH):
            rows = np.arange(start, min(start + BATCH, len(texts)))
            rows = rows[lengths[rows] > 0]  # `reduceat` cannot sum nothing: those rows stay zero
            if rows.size:
                first = ends[rows[0]] - lengths[rows[0]]
                tokens = model.embedding[ids[first : ends[rows[-1]]]]
                vectors[rows] = np.add.reduceat(tokens, ends[rows] - lengths[rows] - first, axis=0)
        self.texts_embedded += len(texts)
        # Normalising makes the sum the mean's direction.
        return Embedded(normalise(vectors), lengths.tolist())

    async def embed(self, texts: list[str]) -> Embedded:
        if self.loaded and sum(map(len, texts)) <= INLINE_CHARS:
            return self.embed_sync(texts)
        return await asyncio.to_thread(self.embed_sync, texts)


def normalise(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Rows scaled to unit length; a zero row stays zero (no NaN)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


model = LocalModel()
