"""The reference model: a small MLP with a token embedding, in numpy.

Weights come from a seed derived from the model name, so the model store can serve them
and every replica computes the same answer for the same input: a probe can then tell a
replica that answers wrongly from one that answers differently by chance. The embedding
table is large enough (about 2 MB) that a throttled model store visibly delays a load.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass

import numpy as np

INPUT_DIM = 16
HIDDEN_DIM = 256
OUTPUT_DIM = 8
VOCAB_SIZE = 32_000
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


def _seed(model: str) -> int:
    return zlib.crc32(model.encode())


def generate_weights(model: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(_seed(model))
    return {
        "embedding": rng.standard_normal((VOCAB_SIZE, INPUT_DIM), dtype=np.float32),
        "w1": (rng.standard_normal((INPUT_DIM, HIDDEN_DIM), dtype=np.float32) / np.sqrt(INPUT_DIM)),
        "b1": np.zeros(HIDDEN_DIM, dtype=np.float32),
        "w2": (rng.standard_normal((HIDDEN_DIM, OUTPUT_DIM), dtype=np.float32) / np.sqrt(HIDDEN_DIM)),
        "b2": np.zeros(OUTPUT_DIM, dtype=np.float32),
    }


def weights_to_bytes(weights: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **weights)
    return buf.getvalue()


def weights_from_bytes(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data)) as npz:
        return {k: npz[k] for k in npz.files}


def tokenize(text: str) -> list[int]:
    """Whitespace words hashed into the vocabulary: stable across processes and runs."""
    return [zlib.crc32(w.encode()) % VOCAB_SIZE for w in text.split()] or [0]


@dataclass
class Model:
    name: str
    weights: dict[str, np.ndarray]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """[batch, INPUT_DIM] float32 -> [batch, OUTPUT_DIM] probabilities (softmax)."""
        w = self.weights
        h = np.maximum(x.astype(np.float32) @ w["w1"] + w["b1"], 0.0)
        logits = h @ w["w2"] + w["b2"]
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def embed(self, tokens: list[int]) -> np.ndarray:
        """A prompt as one input row: the mean of its token embeddings."""
        return self.weights["embedding"][np.asarray(tokens) % VOCAB_SIZE].mean(axis=0)

    def next_token(self, tokens: list[int]) -> int:
        """Greedy decoding of one step; the chosen word's id joins the context."""
        probs = self.forward(self.embed(tokens)[None, :])[0]
        return int(np.argmax(probs))

    def generate(self, prompt: str, max_tokens: int) -> list[str]:
        tokens = tokenize(prompt)
        words: list[str] = []
        for _ in range(max_tokens):
            k = self.next_token(tokens)
            words.append(WORDS[k])
            tokens.append(tokenize(WORDS[k])[0])
        return words


def perturb(probs: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Silent data corruption: noise of `sigma` added to the log-probabilities, renormalised.
    The answer stays a valid probability vector, so only a check of the numbers catches it."""
    logits = np.log(np.maximum(probs, 1e-12)) + rng.normal(0.0, sigma, probs.shape)
    logits -= logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=-1, keepdims=True)).astype(probs.dtype)
