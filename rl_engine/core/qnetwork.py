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
starts near the blend and learns corrections.

``forward`` is the training pass: differentiable, over a batch of states and
the whole catalogue. ``score`` gives the same values for serving. What does not
depend on the state is computed once and kept (:class:`ScoringTables`); per
state it is one (width x products) matrix-vector product, one pass that adds
the popularity-only co-occurrence value of every product, and the
co-occurrence head run on only the neighbours of the customer's items, read
from the sparse similarity rows. Besides the product, a request costs the size
of the customer's history, not of the catalogue.
"""

import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from rl_engine.core.candidates import CandidateIndex, CandidateSearch
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

SPARSE_COOC_MAX_READS = 0.5
"""Above this many similarity entries read per (state x product) Q-value, the
seeds reach most of the catalogue, and ``score`` runs the co-occurrence head
on every product rather than on the neighbours alone."""

TABLE_CHUNK_ROWS = 65_536
"""Products per step when the scoring tables are built; bounds the temporary
memory (the text matrix times its absolute value) on a large catalogue."""

_tables_lock = threading.Lock()
_cell_maps = threading.local()


@dataclass(frozen=True, eq=False)
class ScoringTables:
    """The state-free part of scoring, computed once from a network's weights."""

    weights_version: tuple[tuple[int, int], ...]
    """Storage and in-place version of every tensor it was computed from."""
    items: torch.Tensor
    """(n_items + 1, width) contiguous float32 item vectors; the last is padding."""
    item_bias: torch.Tensor
    """(n_items,) per-product bias."""
    similarity: sp.csr_array
    """(n_items, n_items) float32 neighbour weights, one row per product."""
    unreached_cooc: dict[int, torch.Tensor] = field(default_factory=dict)
    """Per popularity slot, (n_items,) co-occurrence head of a product that no
    item of the state neighbours: its kNN inputs are zero, only popularity is
    left. Filled on first use of each slot."""
    search: CandidateSearch | None = None
    """The candidate settings these tables were built under."""
    candidates: CandidateIndex | None = None
    """Inner-product index for single states in ``candidate_slot``, built
    when the catalogue reaches ``search.min_items`` (see ``candidates``)."""
    candidate_slot: int = -1
    """The popularity slot whose unreached values the index holds."""

    def nbytes(self) -> int:
        """Return the memory these tables hold, in bytes."""
        tensors = [self.items, self.item_bias, *self.unreached_cooc.values()]
        arrays = [self.similarity.data, self.similarity.indices]
        index = self.candidates.nbytes() if self.candidates is not None else 0
        return (
            sum(t.element_size() * t.nelement() for t in tensors)
            + sum(a.nbytes for a in [*arrays, self.similarity.indptr])
            + index
        )


class QNetwork(nn.Module):
    """Q-values over ``n_items`` products; item index ``n_items`` is padding."""

    text: torch.Tensor
    similarity_indices: torch.Tensor
    similarity_values: torch.Tensor
    similarity_dense: torch.Tensor | None
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
        self._scoring_tables: ScoringTables | None = None
        self.candidate_search: CandidateSearch | None = CandidateSearch()
        """How ``score`` serves a large catalogue; None scores it in full."""

        padded_text = np.zeros((n_items + 1, text_width), dtype=np.float32)
        padded_text[:n_items] = text_vectors
        self.register_buffer("text", torch.from_numpy(padded_text))
        coo = similarity.tocoo()
        self.register_buffer(
            "similarity_indices",
            torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.int64),
        )
        self.register_buffer(
            "similarity_values", torch.as_tensor(coo.data, dtype=torch.float32)
        )
        # A dense copy makes the training batch's co-occurrence one
        # sparse-by-dense product. It is built on the first training pass
        # (never for serving), from the sparse buffers, and not saved.
        self.register_buffer("similarity_dense", None, persistent=False)
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
        return self._item_vectors(self.text, self.item_embedding.weight)

    def _item_vectors(
        self, text: torch.Tensor, embedding: torch.Tensor
    ) -> torch.Tensor:
        projected = self.text_projection(text)
        projected = projected * (text.abs().sum(dim=1, keepdim=True) > 0)
        return projected + embedding

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
        product = torch.sparse.mm(matrix, self._dense_similarity())
        return list(product.split(batch))

    def _dense_similarity(self) -> torch.Tensor:
        # Known limit: this is (n_items x n_items), so training past some tens
        # of thousands of products needs the sparse path of ``score`` here too.
        if self.similarity_dense is None:
            dense = torch.zeros(
                self.n_items, self.n_items, device=self.similarity_values.device
            )
            dense[self.similarity_indices[0], self.similarity_indices[1]] = (
                self.similarity_values
            )
            self.similarity_dense = dense
        return self.similarity_dense

    def candidate_features(self, states: StateTensors) -> torch.Tensor:
        """Return (batch, n_items, len(CANDIDATE_FEATURES)) co-occurrence inputs."""
        with torch.no_grad():
            sums = self._seeded_similarity(self._seed_sets(states))
            slot = states["popularity_slot"]
            return _candidate_inputs(
                sums,
                [_row_peak(part) for part in sums],
                self.popularity[slot],
                self.popularity_week[slot],
            )

    def _seed_sets(
        self, states: StateTensors
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Return the (items, weights) whose neighbours feed the kNN inputs.

        In the order of CANDIDATE_FEATURES: the last baskets' items by count,
        the last basket's, and the most bought history items by basket share.
        """
        kept = self.config.history_seed_items
        history_items = states["history_items"][:, :kept]
        repeat = states["repeat_features"][:, :kept]
        return [
            (states["recent_items"], states["recent_counts"]),
            (history_items, repeat[..., REPEAT_FEATURES.index("in_last_basket")]),
            (history_items, repeat[..., REPEAT_FEATURES.index("basket_share")]),
        ]

    def cooccurrence_values(self, features: torch.Tensor) -> torch.Tensor:
        """Return the co-occurrence head over candidate inputs, less their last axis."""
        return (self.cooc_linear(features) + self.cooc_head(features)).squeeze(-1)

    def repeat_values(self, states: StateTensors, scales: torch.Tensor) -> torch.Tensor:
        """Return (batch, history slots): the scaled repeat part of each history item.

        Zero in padding slots; ``scales`` is ``gate(context).exp()``.
        """
        context = states["context"]
        repeat_inputs = states["repeat_features"]
        slots = repeat_inputs.shape[1]
        head_inputs = torch.cat(
            [repeat_inputs, context.unsqueeze(1).expand(-1, slots, -1)], dim=-1
        )
        baseline = torch.cat([torch.zeros_like(repeat_inputs[:, 0]), context], dim=1)
        repeat = self.repeat_linear(repeat_inputs) + self.repeat_head(head_inputs)
        repeat = repeat.squeeze(-1) - self.repeat_head(baseline)
        return repeat * scales[:, 1:] * (states["history_items"] < self.n_items)

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
        scales = self.gate(states["context"]).exp()
        q = q + self.cooccurrence_values(features) * scales[:, :1]

        history_items = states["history_items"]
        padded = torch.zeros(len(q), self.n_items + 1, device=q.device, dtype=q.dtype)
        padded.scatter_add_(1, history_items, self.repeat_values(states, scales))
        return q + padded[:, : self.n_items]

    @torch.no_grad()
    def score(self, states: StateTensors, *, candidates: bool = False) -> torch.Tensor:
        """Return (batch, n_items) Q-values as ``forward`` does, to serve them.

        The values agree with ``forward`` to float32 rounding. Nothing here
        is differentiable; the memory it takes is a few times the Q-values'.
        With ``candidates``, on a catalogue with a candidate index, a single
        state in the serving popularity slot gets exact values for the
        retrieved candidates, its history items and their neighbours, and
        -inf for every other product: what serving needs to pick a slate, in
        time that does not grow with the catalogue.
        """
        tables = self.scoring_tables()
        n_items = self.n_items
        if len(states["context"]) == 0:
            return tables.items.new_empty((0, n_items))
        state = self.state_vectors(states, tables.items)
        scales = self.gate(states["context"]).exp()
        seed_sets = [
            (seed_items.cpu().numpy(), weights.cpu().numpy())
            for seed_items, weights in self._seed_sets(states)
        ]
        if (
            candidates
            and tables.candidates is not None
            and len(state) == 1
            and int(states["popularity_slot"][0]) == tables.candidate_slot
        ):
            return self._score_candidates(states, state, scales, seed_sets, tables)

        items = tables.items[:n_items]
        if len(state) == 1:
            q = torch.addmv(tables.item_bias, items, state[0]).unsqueeze(0)
        else:
            q = torch.addmm(tables.item_bias, state, items.T)

        reads = neighbour_reads(tables.similarity, seed_sets)
        if reads > SPARSE_COOC_MAX_READS * q.numel():
            # The seeds reach most of the catalogue (a small one): run the
            # head on every product, as ``forward`` does.
            cooc = self._cooccurrence_everywhere(states, seed_sets, tables)
            q.addcmul_(cooc, scales[:, :1])
        else:
            self._add_sparse_cooccurrence(q, states, seed_sets, tables, scales)

        history_items = states["history_items"]
        present = history_items < n_items
        rows = torch.arange(len(q), device=q.device).unsqueeze(1)
        history_cells = (rows * n_items + history_items)[present]
        repeat = self.repeat_values(states, scales)[present]
        q.view(-1).index_add_(0, history_cells, repeat)
        return q

    def _score_candidates(
        self,
        states: StateTensors,
        state: torch.Tensor,
        scales: torch.Tensor,
        seed_sets: Sequence[tuple[np.ndarray, np.ndarray]],
        tables: ScoringTables,
    ) -> torch.Tensor:
        """Score one state on its candidates only; see ``rl_engine.core.candidates``."""
        assert tables.candidates is not None
        n_items = self.n_items
        vector, scale = state[0], scales[0, 0]
        q = torch.full((1, n_items), -torch.inf, dtype=vector.dtype)
        row = q[0]

        # Products no history item neighbours: their values are the index's.
        query = torch.cat([vector, vector.new_ones(1), scale.reshape(1)])
        found, values = tables.candidates.search(query.cpu().numpy())
        row[torch.from_numpy(found)] = torch.from_numpy(values)

        # Products some history item neighbours: the head on their inputs.
        cells, sums = seeded_neighbour_sums(tables.similarity, seed_sets)
        if len(cells):
            reached = torch.from_numpy(cells)
            slot = int(states["popularity_slot"][0])
            features = _candidate_inputs(
                list(torch.from_numpy(sums)),
                list(torch.from_numpy(sums.max(axis=1, keepdims=True)).clamp(min=1e-6)),
                self.popularity[slot].index_select(0, reached),
                self.popularity_week[slot].index_select(0, reached),
            )
            base = torch.addmv(
                tables.item_bias[reached], tables.items.index_select(0, reached), vector
            )
            row[reached] = base + self.cooccurrence_values(features) * scale

        # History items: scored as unreached where they are not yet, then
        # their repeat part added.
        history_items = states["history_items"][0]
        present = history_items < n_items
        history = history_items[present]
        unscored = history[torch.isinf(row[history])]
        if len(unscored):
            unreached = tables.unreached_cooc[tables.candidate_slot]
            row[unscored] = (
                torch.addmv(
                    tables.item_bias[unscored],
                    tables.items.index_select(0, unscored),
                    vector,
                )
                + unreached[unscored] * scale
            )
        repeat = self.repeat_values(states, scales)[0][present]
        row.index_add_(0, history, repeat)
        return q

    def _cooccurrence_everywhere(
        self,
        states: StateTensors,
        seed_sets: Sequence[tuple[np.ndarray, np.ndarray]],
        tables: ScoringTables,
    ) -> torch.Tensor:
        """Return the (batch, n_items) co-occurrence head on every product."""
        device = tables.items.device
        batch = len(states["context"])
        sums = []
        for items, weights in seed_sets:
            cells, values = _neighbour_cells(tables.similarity, items, weights)
            dense = np.bincount(cells, weights=values, minlength=batch * self.n_items)
            sums.append(
                torch.from_numpy(
                    dense.reshape(batch, self.n_items).astype(np.float32)
                ).to(device)
            )
        slot = states["popularity_slot"]
        features = _candidate_inputs(
            sums,
            [_row_peak(part) for part in sums],
            self.popularity[slot],
            self.popularity_week[slot],
        )
        return self.cooccurrence_values(features)

    def _add_sparse_cooccurrence(
        self,
        q: torch.Tensor,
        states: StateTensors,
        seed_sets: Sequence[tuple[np.ndarray, np.ndarray]],
        tables: ScoringTables,
        scales: torch.Tensor,
    ) -> None:
        """Add the scaled co-occurrence head to ``q``, running it on neighbours only.

        A product no seed item neighbours has zero kNN inputs: its value
        depends on the popularity slot alone and is kept per slot. The
        (state, product) cells some seed item neighbours get the head on
        their full inputs instead.
        """
        device = q.device
        n_items = self.n_items
        cells, sums = seeded_neighbour_sums(tables.similarity, seed_sets)
        rows = cells // n_items
        if len(q) == 1:
            peaks = sums.max(axis=1, initial=0.0, keepdims=True)
        else:
            by_row = np.zeros((len(sums), len(q)), dtype=np.float32)
            for peak, part in zip(by_row, sums, strict=True):
                np.maximum.at(peak, rows, part)
            peaks = by_row[:, rows]

        rows_t = torch.from_numpy(rows).to(device)
        items_t = torch.from_numpy(cells % n_items).to(device)
        popularity_at = states["popularity_slot"][rows_t] * n_items + items_t
        features = _candidate_inputs(
            list(torch.from_numpy(sums).to(device)),
            list(torch.from_numpy(peaks).clamp(min=1e-6).to(device)),
            self.popularity.view(-1)[popularity_at],
            self.popularity_week.view(-1)[popularity_at],
        )
        reached = self.cooccurrence_values(features)

        cells_t = torch.from_numpy(cells).to(device)
        flat = q.view(-1)
        reached_q = flat[cells_t]
        slots = states["popularity_slot"].tolist()
        if len(set(slots)) > 1:
            unreached = torch.stack([self._unreached_cooc(tables, s) for s in slots])
        else:
            unreached = self._unreached_cooc(tables, slots[0]).unsqueeze(0)
        q.addcmul_(unreached, scales[:, :1])
        flat[cells_t] = reached_q + reached * scales[:, 0][rows_t]

    def _unreached_cooc(self, tables: ScoringTables, slot: int) -> torch.Tensor:
        cached = tables.unreached_cooc.get(slot)
        if cached is None:
            zeros = torch.zeros_like(self.popularity[slot])
            features = _candidate_inputs(
                [zeros] * 3,
                [torch.ones_like(zeros)] * 3,
                self.popularity[slot],
                self.popularity_week[slot],
            )
            cached = self.cooccurrence_values(features)
            tables.unreached_cooc[slot] = cached
        return cached

    def scoring_tables(self) -> ScoringTables:
        """Return the state-free part of ``score``; rebuilt after weights change."""
        version = self._weights_version()
        tables = self._scoring_tables
        if tables is not None and self._current(tables, version):
            return tables
        with _tables_lock:
            tables = self._scoring_tables
            if tables is None or not self._current(tables, version):
                tables = self._build_scoring_tables(version)
                self._scoring_tables = tables
        return tables

    def _current(
        self, tables: ScoringTables, version: tuple[tuple[int, int], ...]
    ) -> bool:
        return (
            tables.weights_version == version and tables.search == self.candidate_search
        )

    def _weights_version(self) -> tuple[tuple[int, int], ...]:
        # Any in-place update (an optimiser step, load_state_dict) bumps a
        # tensor's version; moving it to another device changes its storage.
        tensors = [*self.parameters()] + [
            buffer
            for name, buffer in self.named_buffers()
            if name != "similarity_dense"
        ]
        return tuple((t.data_ptr(), t._version) for t in tensors)

    @torch.no_grad()
    def _build_scoring_tables(
        self, version: tuple[tuple[int, int], ...]
    ) -> ScoringTables:
        items = torch.empty_like(self.item_embedding.weight).contiguous()
        for start in range(0, len(items), TABLE_CHUNK_ROWS):
            chunk = slice(start, start + TABLE_CHUNK_ROWS)
            items[chunk] = self._item_vectors(
                self.text[chunk], self.item_embedding.weight[chunk]
            )
        indices = self.similarity_indices.cpu().numpy()
        similarity = sp.csr_array(
            (self.similarity_values.cpu().numpy(), (indices[0], indices[1])),
            shape=(self.n_items, self.n_items),
        )
        search = self.candidate_search
        tables = ScoringTables(
            weights_version=version,
            items=items,
            item_bias=self.item_bias.detach(),
            similarity=similarity,
            search=search,
        )
        # Serving states sit in the latest popularity snapshot.
        slot = len(self.popularity) - 1
        unreached = self._unreached_cooc(tables, slot)
        if (
            search is not None
            and self.n_items >= search.min_items
            and items.device.type == "cpu"
        ):
            vectors = torch.cat(
                [items[: self.n_items], tables.item_bias[:, None], unreached[:, None]],
                dim=1,
            )
            tables = replace(
                tables,
                candidates=CandidateIndex(vectors.numpy(), search),
                candidate_slot=slot,
            )
        return tables


def neighbour_reads(
    similarity: sp.csr_array, seed_sets: Sequence[tuple[np.ndarray, np.ndarray]]
) -> int:
    """Return how many similarity entries the seed items' rows hold, all sets."""
    n_items = similarity.shape[1]
    total = 0
    for items, weights in seed_sets:
        seeds = items[(items < n_items) & (weights != 0)]
        total += int((similarity.indptr[seeds + 1] - similarity.indptr[seeds]).sum())
    return total


def _neighbour_cells(
    similarity: sp.csr_array, items: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Read one seed set's similarity rows: every (cell, weighted similarity).

    ``items`` and ``weights`` are (states x slots); items at ``n_items`` and
    zero weights are padding. A cell is ``state * n_items + product``; a cell
    that several seed items neighbour comes once per seed item.
    """
    n_items = similarity.shape[1]
    rows, slots = np.nonzero((items < n_items) & (weights != 0))
    seeds = items[rows, slots]
    starts = similarity.indptr[seeds].astype(np.int64)
    lengths = similarity.indptr[seeds + 1] - starts
    offsets = np.cumsum(lengths) - lengths
    positions = np.repeat(starts - offsets, lengths) + np.arange(lengths.sum())
    cells = np.repeat(rows, lengths) * n_items + similarity.indices[positions]
    values = np.repeat(weights[rows, slots], lengths) * similarity.data[positions]
    return cells, values


def seeded_neighbour_sums(
    similarity: sp.csr_array, seed_sets: Sequence[tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """Sum each state's weighted seed items' similarity rows, per seed set.

    Every seed set is a pair of (states x slots) arrays, items and weights;
    items at ``n_items`` and zero weights are padding. Return the flat cells
    ``state * n_items + product`` that some seed item of some set neighbours,
    and their (sets x cells) float32 sums; every other cell is zero in every
    set. The work is the number of neighbours read, never the catalogue.
    """
    n_items = similarity.shape[1]
    cell_parts, value_parts, set_parts = [], [], []
    for index, (items, weights) in enumerate(seed_sets):
        cells, values = _neighbour_cells(similarity, items, weights)
        cell_parts.append(cells)
        value_parts.append(values)
        set_parts.append(np.full(len(cells), index))
    cells = np.concatenate(cell_parts)
    values = np.concatenate(value_parts)
    sets = np.concatenate(set_parts)

    # Group equal cells without sorting: a per-thread map from cell to group
    # (kept between calls, 8 bytes a cell), written and read only at the cells
    # in hand.
    batch = len(seed_sets[0][0]) if seed_sets else 0
    cell_map = _cell_map(batch * n_items)
    order = np.arange(len(cells))
    cell_map[cells] = order
    reached = cells[cell_map[cells] == order]
    cell_map[reached] = np.arange(len(reached))
    groups = cell_map[cells]
    sums = np.bincount(
        sets * len(reached) + groups,
        weights=values,
        minlength=len(seed_sets) * len(reached),
    )
    return reached, sums.reshape(len(seed_sets), len(reached)).astype(np.float32)


def _cell_map(size: int) -> np.ndarray:
    """Return this thread's scratch array of at least ``size`` int64 entries."""
    cell_map: np.ndarray | None = getattr(_cell_maps, "array", None)
    if cell_map is None or len(cell_map) < size:
        cell_map = np.empty(size, dtype=np.int64)
        _cell_maps.array = cell_map
    return cell_map


def _candidate_inputs(
    sums: Sequence[torch.Tensor],
    peaks: Sequence[torch.Tensor],
    popularity: torch.Tensor,
    popularity_week: torch.Tensor,
) -> torch.Tensor:
    """Stack the co-occurrence head's inputs, in CANDIDATE_FEATURES order."""
    recent, last, whole = sums
    recent_peak, last_peak, whole_peak = peaks
    return torch.stack(
        [
            recent / recent_peak,
            torch.log1p(recent),
            last / last_peak,
            whole / whole_peak,
            popularity,
            popularity_week,
        ],
        dim=-1,
    )


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
