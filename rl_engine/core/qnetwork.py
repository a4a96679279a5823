"""The Q-network: Q(s, a) for every product of the catalogue in one pass.

Q(s, a) = <state(s), item(a)> + bias(a) + g_c(s) cooc(s, a) + g_r(s) repeat(s, a)

- ``item(a)`` is the product's text vector (from the BERT-family encoder,
  frozen) projected to the model width, plus a learned per-product embedding.
- ``state(s)`` is a GRU over the customer's recent history items and their
  ages, mixed with context numbers; its last layer starts at zero.
- ``cooc(s, a)`` reads, for every candidate, its co-occurrence with the items
  of the customer's last baskets, last basket and whole history (each over the
  state's own maximum, as item-kNN ranks) and its 30- and 7-day popularity.
- ``repeat(s, a)`` reads, for the products the customer bought before, how
  often, how recently and how regularly: about half of a wholesale basket is
  repeat buying.
- ``g_c(s)`` and ``g_r(s)`` are positive scales from the context, so the
  balance of repeat and new products follows the history's length.

Both heads are a linear part, started at the blend baseline's weights (repeat
share, kNN over its maximum, popularity), plus a zero-started MLP, so training
starts near the blend and learns corrections. Scoring the catalogue is one
(states x width) by (width x products) product plus a sparse-by-dense
co-occurrence product, so it stays linear in the catalogue size.
"""

import warnings

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from rl_engine.core.config import PolicyConfig
from rl_engine.core.states import CONTEXT_FEATURES, REPEAT_FEATURES

StateTensors = dict[str, torch.Tensor]

# torch.sparse.mm goes through CSR internally and warns that CSR is in beta.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


CANDIDATE_FEATURES = (
    "knn_recent",
    "log_knn_recent",
    "knn_last_basket",
    "knn_history",
    "popularity",
    "popularity_week",
)
"""Per-candidate inputs of the co-occurrence head; each kNN score is divided by
the state's own maximum, as the item-kNN baseline ranks."""


class QNetwork(nn.Module):
    """Q-values over ``n_items`` products; item index ``n_items`` is padding."""

    text: torch.Tensor
    similarity_indices: torch.Tensor
    similarity_values: torch.Tensor
    similarity_dense: torch.Tensor
    popularity: torch.Tensor
    popularity_week: torch.Tensor

    def __init__(
        self,
        *,
        text_vectors: np.ndarray,
        similarity: sp.csr_array,
        popularity: np.ndarray,
        config: PolicyConfig,
        recent_popularity: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        n_items, text_width = text_vectors.shape
        width = config.hidden
        self.n_items = n_items
        self.config = config

        padded_text = np.vstack([text_vectors, np.zeros((1, text_width))])
        self.register_buffer("text", torch.as_tensor(padded_text, dtype=torch.float32))
        coo = similarity.tocoo()
        self.register_buffer(
            "similarity_indices",
            torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.int64),
        )
        self.register_buffer(
            "similarity_values", torch.as_tensor(coo.data, dtype=torch.float32)
        )
        dense = np.zeros((n_items, n_items), dtype=np.float32)
        dense[coo.row, coo.col] = coo.data
        # A dense copy makes co-occurrence one sparse-by-dense product; it is
        # rebuilt from the sparse buffers, so it is not saved.
        self.register_buffer(
            "similarity_dense", torch.as_tensor(dense), persistent=False
        )
        self.register_buffer("popularity", _scaled_popularity(popularity))
        weekly = popularity if recent_popularity is None else recent_popularity
        self.register_buffer("popularity_week", _scaled_popularity(weekly))

        self.text_projection = nn.Linear(text_width, width)
        self.item_embedding = nn.Embedding(n_items + 1, width, padding_idx=n_items)
        nn.init.normal_(self.item_embedding.weight, std=0.01)
        with torch.no_grad():
            self.item_embedding.weight[n_items].zero_()
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        self.age_projection = nn.Linear(1, width)
        self.gru = nn.GRU(width, width, batch_first=True)
        self.state_head = nn.Sequential(
            nn.Linear(width + len(CONTEXT_FEATURES), width),
            nn.ReLU(),
            nn.Linear(width, width),
        )
        # Each head is a linear part, started at the blend baseline's weights,
        # plus a zero-started MLP that learns corrections on top of it.
        self.cooc_linear = nn.Linear(len(CANDIDATE_FEATURES), 1)
        self.cooc_head = nn.Sequential(
            nn.Linear(len(CANDIDATE_FEATURES), 16), nn.ReLU(), nn.Linear(16, 1)
        )
        self.repeat_linear = nn.Linear(len(REPEAT_FEATURES), 1, bias=False)
        self.repeat_head = nn.Sequential(
            nn.Linear(len(REPEAT_FEATURES) + len(CONTEXT_FEATURES), 32),
            nn.ReLU(),
            nn.Linear(32, 1),
        )
        # Log-scales of the co-occurrence and repeat parts per state, from the
        # context: how much a customer repeats depends on how long they stayed.
        self.gate = nn.Linear(len(CONTEXT_FEATURES), 2)
        with torch.no_grad():
            self.gate.weight.zero_()
            self.gate.bias.zero_()
            for head in (self.state_head, self.cooc_head, self.repeat_head):
                last = head[-1]
                assert isinstance(last, nn.Linear)
                last.weight.zero_()
                last.bias.zero_()
            self.cooc_linear.weight.zero_()
            self.cooc_linear.bias.zero_()
            self.cooc_linear.weight[0, CANDIDATE_FEATURES.index("knn_recent")] = (
                config.prior_knn
            )
            self.cooc_linear.weight[0, CANDIDATE_FEATURES.index("popularity")] = (
                config.prior_popularity
            )
            self.repeat_linear.weight.zero_()
            self.repeat_linear.weight[0, REPEAT_FEATURES.index("basket_share")] = (
                config.prior_repeat
            )

    def item_vectors(self) -> torch.Tensor:
        """Return (n_items + 1, width): text projection plus learned embedding."""
        text = self.text_projection(self.text)
        text = text * (self.text.abs().sum(dim=1, keepdim=True) > 0)
        return text + self.item_embedding.weight

    def state_vectors(self, states: StateTensors, items: torch.Tensor) -> torch.Tensor:
        """Return (batch, width) from the history sequence and the context."""
        sequence = items[states["sequence_items"]]
        ages = states["sequence_ages"].unsqueeze(-1)
        present = (states["sequence_items"] < self.n_items).unsqueeze(-1)
        inputs = (sequence + self.age_projection(ages)) * present
        _, last_hidden = self.gru(inputs)
        return self.state_head(torch.cat([last_hidden[-1], states["context"]], dim=1))

    def cooccurrence(self, states: StateTensors) -> torch.Tensor:
        """Return (batch, n_items): similarity summed over the recent items."""
        return self._seeded_similarity(
            [(states["recent_items"], states["recent_counts"])]
        )[0]

    def _seeded_similarity(
        self, seeds: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> list[torch.Tensor]:
        """Return, per (items, weights) seed set, the weighted similarity sums."""
        batch = len(seeds[0][0])
        device = seeds[0][0].device
        row_parts, col_parts, value_parts = [], [], []
        for offset, (seed_items, weights) in enumerate(seeds):
            present = (seed_items < self.n_items) & (weights != 0)
            rows = torch.arange(batch, device=device) + offset * batch
            row_parts.append(rows.unsqueeze(1).expand_as(seed_items)[present])
            col_parts.append(seed_items[present])
            value_parts.append(weights[present])
        matrix = torch.sparse_coo_tensor(
            torch.stack([torch.cat(row_parts), torch.cat(col_parts)]),
            torch.cat(value_parts),
            (batch * len(seeds), self.n_items),
            check_invariants=False,
        )
        product = torch.sparse.mm(matrix, self.similarity_dense)
        return list(product.split(batch))

    def candidate_features(self, states: StateTensors) -> torch.Tensor:
        """Return (batch, n_items, len(CANDIDATE_FEATURES)) co-occurrence inputs."""
        kept = self.config.history_seed_items
        history_items = states["history_items"][:, :kept]
        repeat = states["repeat_features"][:, :kept]
        with torch.no_grad():
            recent, last, whole = self._seeded_similarity(
                [
                    (states["recent_items"], states["recent_counts"]),
                    (
                        history_items,
                        repeat[..., REPEAT_FEATURES.index("in_last_basket")],
                    ),
                    (history_items, repeat[..., REPEAT_FEATURES.index("basket_share")]),
                ]
            )
            slot = states["popularity_slot"]
            return torch.stack(
                [
                    recent / _row_peak(recent),
                    torch.log1p(recent),
                    last / _row_peak(last),
                    whole / _row_peak(whole),
                    self.popularity[slot],
                    self.popularity_week[slot],
                ],
                dim=-1,
            )

    def forward(
        self, states: StateTensors, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return (batch, n_items) Q-values.

        ``features`` may pass in ``candidate_features(states)`` when it is
        already computed: it holds no parameters, so networks can share it.
        """
        items = self.item_vectors()
        state = self.state_vectors(states, items)
        q = state @ items[: self.n_items].T + self.item_bias

        if features is None:
            features = self.candidate_features(states)
        context = states["context"]
        scales = self.gate(context).exp()
        cooc = (self.cooc_linear(features) + self.cooc_head(features)).squeeze(-1)
        q = q + cooc * scales[:, :1]

        history_items = states["history_items"]
        repeat_inputs = states["repeat_features"]
        slots = repeat_inputs.shape[1]
        head_inputs = torch.cat(
            [repeat_inputs, context.unsqueeze(1).expand(-1, slots, -1)], dim=-1
        )
        baseline = torch.cat([torch.zeros_like(repeat_inputs[:, 0]), context], dim=1)
        repeat = self.repeat_linear(repeat_inputs) + self.repeat_head(head_inputs)
        repeat = repeat.squeeze(-1) - self.repeat_head(baseline)
        repeat = repeat * scales[:, 1:] * (history_items < self.n_items)
        padded = torch.zeros(len(q), self.n_items + 1, device=q.device, dtype=q.dtype)
        padded.scatter_add_(1, history_items, repeat)
        return q + padded[:, : self.n_items]


def _scaled_popularity(counts: np.ndarray) -> torch.Tensor:
    """Return log1p(counts) over its largest value, as float32."""
    scaled = np.log1p(counts) / max(float(np.log1p(counts).max()), 1.0)
    return torch.as_tensor(scaled, dtype=torch.float32)


def _row_peak(scores: torch.Tensor) -> torch.Tensor:
    return scores.amax(dim=1, keepdim=True).clamp(min=1e-6)


def top_neighbours(similarity: np.ndarray | sp.csr_array, k: int) -> sp.csr_array:
    """Keep each item's ``k`` most similar items (rows), as a sparse matrix."""
    if isinstance(similarity, np.ndarray):
        dense = np.asarray(similarity)
    else:
        dense = similarity.toarray()
    k = min(k, dense.shape[1])
    top = np.argpartition(-dense, k - 1, axis=1)[:, :k]
    rows = np.repeat(np.arange(dense.shape[0]), k)
    values = dense[rows, top.ravel()]
    kept = values > 0
    return sp.csr_array(
        (values[kept], (rows[kept], top.ravel()[kept])), shape=dense.shape
    )
