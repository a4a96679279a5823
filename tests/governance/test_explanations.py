"""Explanations: pure parts, a network worked by hand, and the real trained policy."""

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from django.contrib.auth.models import User
from django.utils import timezone

from commerce.models import Customer, Product, ServedSlate, ServedSlateItem
from governance.explanations import (
    attribute_q_value,
    cosine_neighbours,
    customer_state,
    explain_score,
    explain_slate,
    greedy_rank,
    history_kind,
    policy_index,
    split_in_proportion,
    why_not,
    why_recommended,
)
from governance.models import OverrideKind, ReasonCode
from governance.services import create_override
from rl_engine.core.config import PolicyConfig
from rl_engine.core.policy import DQNPolicy
from rl_engine.core.qnetwork import CANDIDATE_FEATURES, QNetwork
from rl_engine.core.states import CONTEXT_FEATURES, REPEAT_FEATURES, StateBatch
from rl_engine.models import PolicyVersion, ProductEmbedding
from rl_engine.services import load_policy
from rl_engine.serving import SlateRequest, recommend
from tests.factories import ProductFactory

UK = {"country": "United Kingdom"}
REGULAR = "17850"
"""A UK customer with many baskets in the first week."""


# --- Pure parts ----------------------------------------------------------------


def test_split_in_proportion_shares_a_total_and_keeps_what_it_cannot_split():
    shares, left = split_in_proportion(2.0, [4, 7, 4], [0.5, 0.25, 0.25])

    assert shares == {4: pytest.approx(1.5), 7: pytest.approx(0.5)}
    assert left == 0.0
    assert split_in_proportion(1.2, [3], [0.0]) == ({}, 1.2)


def test_cosine_neighbours_ranks_rows_by_angle_not_length():
    vectors = np.array([[10.0, 0.0], [1.0, 1.0], [0.0, 3.0], [-1.0, 0.0]])

    nearest = cosine_neighbours(np.array([1.0, 0.0]), vectors, 3)

    assert [row for row, _ in nearest] == [0, 1, 2]
    assert [cosine for _, cosine in nearest] == pytest.approx([1.0, 2**-0.5, 0.0])


def test_history_kinds_and_greedy_rank():
    assert [history_kind(n) for n in (None, 0, 1, 2, 5, 6)] == [
        "anonymous",
        "new",
        "1 basket",
        "2-5 baskets",
        "2-5 baskets",
        "6+ baskets",
    ]
    scores = np.array([0.9, 0.1, 0.5, 0.7, 0.5, 2.0])
    eligible = np.array([True, True, True, True, True, False])

    # Item 4 ties item 2 and ranks after it; item 5 is not eligible.
    assert greedy_rank(scores, eligible, 4, 2) == (4, 0.7, 5)
    assert greedy_rank(scores, eligible, 0, 2) == (1, 0.7, 5)


# --- A network small enough to attribute by hand -----------------------------------


def hand_network() -> QNetwork:
    """Four products, width 2, weights set so that every part is known.

    The GRU and every head's MLP output zero, the gate scales are one, and the
    state vector is the constant (1, 2). Product 2 has the text (0.3, 0.4),
    projected by the identity, and the learned embedding (0.1, 0). The
    co-purchase head weighs the whole-history kNN input by 2; the repeat head
    weighs the basket share by 8. Products 0 and 2 have biases 0.25 and 0.5.
    Similarities: 0-1 0.5, 0-2 0.6, 1-2 0.2.
    """
    pairs = {(0, 1): 0.5, (0, 2): 0.6, (1, 2): 0.2}
    rows, columns, values = [], [], []
    for (a, b), value in pairs.items():
        rows += [a, b]
        columns += [b, a]
        values += [value, value]
    text = np.zeros((4, 2), dtype=np.float32)
    text[2] = [0.3, 0.4]
    network = QNetwork(
        text_vectors=text,
        similarity=sp.csr_array((values, (rows, columns)), shape=(4, 4)),
        popularity=np.array([[5.0, 3.0, 1.0, 0.0]]),
        config=PolicyConfig(hidden=2, max_history_items=3, max_recent_items=3),
    )
    with torch.no_grad():
        for parameter in network.gru.parameters():
            parameter.zero_()
        last = network.state_head[-1]
        assert isinstance(last, torch.nn.Linear)
        last.bias.copy_(torch.tensor([1.0, 2.0]))
        network.text_projection.weight.copy_(torch.eye(2))
        network.text_projection.bias.zero_()
        network.item_embedding.weight.zero_()
        network.item_embedding.weight[2] = torch.tensor([0.1, 0.0])
        network.item_bias.copy_(torch.tensor([0.25, 0.0, 0.5, 0.0]))
        network.cooc_linear.weight.zero_()
        network.cooc_linear.weight[0, CANDIDATE_FEATURES.index("knn_history")] = 2.0
    return network.eval()


def hand_state() -> StateBatch:
    """One basket, holding products 0 and 1, bought a day ago."""
    repeat = np.zeros((1, 3, len(REPEAT_FEATURES)), dtype=np.float32)
    repeat[0, :2, REPEAT_FEATURES.index("basket_share")] = 1.0
    repeat[0, :2, REPEAT_FEATURES.index("in_last_basket")] = 1.0
    return StateBatch(
        sequence_items=np.array([[4, 0, 1]]),
        sequence_ages=np.full((1, 3), np.log1p(1.0), dtype=np.float32),
        history_items=np.array([[0, 1, 4]]),
        repeat_features=repeat,
        recent_items=np.array([[0, 1, 4]]),
        recent_counts=np.array([[1.0, 1.0, 0.0]], dtype=np.float32),
        context=np.ones((1, len(CONTEXT_FEATURES)), dtype=np.float32),
        popularity_slot=np.array([0]),
    )


def test_a_product_not_bought_before_is_attributed_to_its_co_purchases_by_hand():
    # The whole-history kNN sums are 0.5, 0.5, 0.6 + 0.2 = 0.8 and 0, so
    # product 2's input is 0.8 / 0.8 = 1 and its co-purchase part 2 x 1 = 2:
    # 0.6 / 0.8 of it from product 0 and 0.2 / 0.8 from product 1. The dot
    # product is (1, 2) . ((0.3, 0.4) + (0.1, 0)) = 1.1 (text) + 0.1.
    explained = attribute_q_value(hand_network(), hand_state(), 2)

    assert explained.score == pytest.approx(3.7, abs=1e-6)
    assert explained.baseline_score == pytest.approx(1.7, abs=1e-6)
    assert explained.co_purchase == {
        0: pytest.approx(1.5, abs=1e-6),
        1: pytest.approx(0.5, abs=1e-6),
    }
    assert explained.repeat == {0: 0.0, 1: 0.0}
    assert explained.sequence == {0: 0.0, 1: 0.0}
    assert explained.attribution_sum == pytest.approx(2.0, abs=1e-6)
    assert abs(explained.convergence_delta) < 1e-6
    parts = explained.components
    assert parts.text == pytest.approx(1.1, abs=1e-6)
    assert parts.learned_embedding == pytest.approx(0.1, abs=1e-6)
    assert parts.item_bias == pytest.approx(0.5)
    assert parts.co_purchase_and_popularity == pytest.approx(2.0, abs=1e-6)
    assert parts.repeat == 0.0


def test_a_product_bought_before_is_attributed_to_itself_by_hand():
    # Product 0: bias 0.25; co-purchase 2 x 0.5 / 0.8 = 1.25, all through
    # product 1 (a product is not its own neighbour); repeat 8 x 1.
    explained = attribute_q_value(hand_network(), hand_state(), 0)

    assert explained.score == pytest.approx(9.5, abs=1e-6)
    assert explained.baseline_score == pytest.approx(0.25, abs=1e-6)
    assert explained.co_purchase == {1: pytest.approx(1.25, abs=1e-6)}
    assert explained.repeat == {0: pytest.approx(8.0, abs=1e-6), 1: 0.0}
    assert explained.components.repeat == pytest.approx(8.0, abs=1e-6)
    assert explained.components.text == 0.0
    assert explained.unassigned == pytest.approx(0.0, abs=1e-6)


def test_attribution_leaves_the_served_network_untouched():
    network = hand_network()

    attribute_q_value(network, hand_state(), 2)

    # The substitution and the dense similarity belong to a private copy.
    assert type(network.gru) is torch.nn.GRU
    assert network.similarity_dense is None


# --- The real trained policy ----------------------------------------------------


def serve(customer: str, k: int = 10, seed: int = 0) -> ServedSlate:
    request = SlateRequest(
        customer_external_id=customer,
        session_id="",
        session_items=[],
        k=k,
        context={},
        exclude=set(),
        exclude_bought_within_days=None,
        non_personalised=False,
    )
    return recommend(request, rng=np.random.default_rng(seed)).slate


@pytest.fixture
def policy(live_version: PolicyVersion) -> DQNPolicy:
    return load_policy(live_version)


@pytest.fixture
def admin() -> User:
    return User.objects.create_user("reviewer")


@pytest.mark.django_db
def test_attributions_sum_to_the_served_score_on_the_real_policy(policy):
    customer = Customer.objects.get(external_id=REGULAR)
    state = customer_state(policy, customer, timezone.now())
    assert state is not None
    served = policy.q_values(state)[0]
    bought = {int(i) for i in state.history_items[0] if i < len(policy.item_ids)}
    order = np.argsort(-served)
    top, middle = int(order[0]), int(order[len(order) // 2])
    never_bought = next(int(i) for i in order if int(i) not in bought)
    bought_before = sorted(bought)[0]

    for index in (top, middle, never_bought, bought_before):
        sku = str(policy.item_ids[index])
        explained = explain_score(policy, state, sku, top_history=5)

        # The explained score is the one serving ranks by (float32 rounding).
        assert explained.score == pytest.approx(float(served[index]), abs=1e-4)
        # Completeness: baseline + attributions = score, within captum's delta,
        # and the delta itself is small against the score.
        assert (
            abs(explained.baseline_score + explained.attribution_sum - explained.score)
            <= abs(explained.convergence_delta) + 1e-5
        )
        assert abs(explained.convergence_delta) <= 1e-3 * max(1.0, abs(explained.score))
        # The products listed and the rest add up to the attribution sum.
        listed = sum(part.contribution for part in explained.history)
        assert listed + explained.unassigned == pytest.approx(
            explained.attribution_sum, abs=1e-6
        )
        assert len(explained.history) <= 5
        for part in explained.history:
            assert part.contribution == pytest.approx(
                part.sequence + part.co_purchase + part.repeat
            )
        # The exact split over the network's parts adds up to the score.
        assert explained.components.total == pytest.approx(explained.score, abs=1e-5)
        assert "Integrated Gradients" in explained.method
        json.dumps(explained.to_dict())

    # A product bought before owes its repeat part to itself; the MiniLM text
    # of a product reaches its score through the dot product.
    repeat = explain_score(policy, state, str(policy.item_ids[bought_before]))
    own = [p for p in repeat.history if p.sku == policy.item_ids[bought_before]]
    assert len(own) == 1
    assert own[0].repeat == pytest.approx(repeat.components.repeat, abs=1e-4)
    assert repeat.components.repeat != 0.0
    assert float(policy.network.text[top].abs().sum()) > 0
    assert explain_score(policy, state, str(policy.item_ids[top])).components.text != 0


@pytest.mark.django_db
def test_why_not_names_the_suppression_that_removed_a_product(policy, admin):
    slate = serve(REGULAR)
    product = slate.items.get(position=1).product
    assert policy_index(policy, product.external_id) is not None

    suppression = create_override(
        actor=admin,
        kind=OverrideKind.SUPPRESS,
        product_id=product.pk,
        reason_code=ReasonCode.LOW_QUALITY,
        statement="Returned by one buyer in three.",
    )
    answer = why_not(product, UK, policy=policy)

    assert answer.reason == "suppressed"
    assert answer.override is not None
    assert answer.override.override_id == suppression.pk
    assert answer.override.kind == "suppress"
    assert answer.override.reason_code == "low_quality"
    assert f"override #{suppression.pk}, suppress" in answer.message
    assert "Returned by one buyer in three." in answer.message
    assert answer.ranking is None
    # Serving agrees: the product is gone from the next slate.
    again = serve(REGULAR)
    assert not again.items.filter(product=product).exists()
    json.dumps(answer.to_dict())


@pytest.mark.django_db
def test_why_not_names_a_cap_once_the_product_reached_its_share(policy, admin):
    product = serve(REGULAR).items.get(position=1).product
    # One of the ten items served so far: a share of 0.1, over a cap of 0.05.
    cap = create_override(
        actor=admin,
        kind=OverrideKind.CAP,
        product_id=product.pk,
        value=0.05,
        reason_code=ReasonCode.OVER_EXPOSURE,
        statement="Shown far more often than it sells.",
    )

    answer = why_not(product, UK, policy=policy)

    assert answer.reason == "cap_reached"
    assert answer.override is not None
    assert (answer.override.override_id, answer.override.kind) == (cap.pk, "cap")
    assert "reached the cap" in answer.message


@pytest.mark.django_db
def test_a_suppression_scoped_to_another_country_does_not_explain_a_miss(policy, admin):
    product = serve(REGULAR).items.get(position=1).product
    create_override(
        actor=admin,
        kind=OverrideKind.SUPPRESS,
        product_id=product.pk,
        reason_code=ReasonCode.BUSINESS,
        statement="Not sold in France.",
        group_attribute="country",
        group_value="France",
    )
    customer = Customer.objects.get(external_id=REGULAR)

    in_uk = why_not(product, UK, policy=policy, customer=customer)
    in_france = why_not(product, {"country": "France"}, policy=policy)

    assert in_uk.reason == "ranked_in_top_k"
    assert in_uk.ranking is not None
    assert in_uk.ranking.rank <= 10
    assert in_france.reason == "suppressed"
    assert in_france.override is not None
    assert in_france.override.scope == "country = France"


@pytest.mark.django_db
def test_why_not_gives_rank_and_gap_to_the_last_shown_item(policy):
    customer = Customer.objects.get(external_id=REGULAR)
    state = customer_state(policy, customer, timezone.now())
    assert state is not None
    scores = policy.q_values(state)[0].astype(np.float64)
    eligible_skus = set(
        Product.objects.filter(
            is_active=True, in_stock=True, merchant__is_active=True
        ).values_list("external_id", flat=True)
    )
    eligible = np.array([sku in eligible_skus for sku in policy.item_ids])
    order = [int(i) for i in np.argsort(-scores, kind="stable") if eligible[i]]
    index = order[40]
    product = Product.objects.filter(external_id=policy.item_ids[index]).first()
    assert product is not None

    answer = why_not(product, UK, policy=policy, customer=customer, k=10)

    assert answer.reason == "ranked_below"
    ranking = answer.ranking
    assert ranking is not None
    assert ranking.rank == 41
    assert ranking.rank_without_governance == 41
    assert ranking.eligible == int(eligible.sum())
    assert ranking.score == pytest.approx(scores[index])
    assert ranking.last_shown_score == pytest.approx(scores[order[9]])
    assert ranking.score_gap == pytest.approx(scores[order[9]] - scores[index])
    assert ranking.score_gap > 0
    assert ranking.share_shown == 0.0

    # For the group, the representative is the median of its sampled customers.
    for_group = why_not(product, UK, policy=policy, sample_size=8)
    assert for_group.ranking is not None
    assert for_group.ranking.customers == 8
    assert for_group.ranking.best_rank <= for_group.ranking.rank
    assert for_group.ranking.rank <= for_group.ranking.worst_rank


@pytest.mark.django_db
def test_why_not_checks_causes_in_serving_order(policy, admin):
    product = serve(REGULAR).items.get(position=2).product
    create_override(
        actor=admin,
        kind=OverrideKind.SUPPRESS,
        product_id=product.pk,
        reason_code=ReasonCode.LOW_QUALITY,
        statement="Poor ratings.",
    )
    product.in_stock = False
    product.save()
    new_product = ProductFactory.create(title="Enamel mug")

    out_of_stock = why_not(product, UK, policy=policy)
    untrained = why_not(new_product, UK, policy=policy)

    assert out_of_stock.reason == "out_of_stock"
    assert out_of_stock.other_blockers == ["suppressed"]
    assert out_of_stock.override is not None
    assert untrained.reason == "not_in_policy"
    assert untrained.ranking is None


@pytest.mark.django_db
def test_why_recommended_counts_audiences_and_finds_text_neighbours(policy):
    abroad = (
        Customer.objects.filter(events__isnull=False)
        .exclude(country="United Kingdom")
        .distinct()
        .order_by("external_id")[:4]
    )
    for customer in [*abroad, Customer.objects.get(external_id=REGULAR)]:
        serve(customer.external_id, k=20)
    shown = (
        ServedSlateItem.objects.values_list("product", flat=True)
        .order_by("product")
        .distinct()
    )
    counts = {pk: ServedSlateItem.objects.filter(product_id=pk).count() for pk in shown}
    product = Product.objects.get(pk=max(counts, key=lambda pk: (counts[pk], -pk)))

    answer = why_recommended(product, policy=policy)

    audience = answer.audience
    slates = ServedSlate.objects.filter(items__product=product)
    assert audience.shown == counts[product.pk] == slates.count()
    expected_countries: dict[str, int] = {}
    for slate in slates.select_related("customer"):
        assert slate.customer is not None
        country = slate.customer.country
        expected_countries[country] = expected_countries.get(country, 0) + 1
    assert {c.label: c.count for c in audience.countries} == expected_countries
    assert sum(c.share for c in audience.countries) == pytest.approx(1.0)
    # Every customer here has bought in the first week: each has a history kind.
    assert sum(c.count for c in audience.history_kinds) == audience.shown
    assert {c.label for c in audience.history_kinds} <= {
        "1 basket",
        "2-5 baskets",
        "6+ baskets",
    }
    assert sum(c.count for c in audience.bought_before) == audience.shown

    # The attribution explains the latest customer it was shown to.
    assert answer.attribution is not None
    assert "last customer" in answer.attribution_basis
    assert (
        abs(
            answer.attribution.baseline_score
            + answer.attribution.attribution_sum
            - answer.attribution.score
        )
        <= abs(answer.attribution.convergence_delta) + 1e-5
    )

    # The nearest product by text is the one of highest cosine, worked here.
    vectors = {row.text_hash: row.as_array() for row in ProductEmbedding.objects.all()}
    own = vectors[product.text_hash]
    best_cosine, best_sku = -2.0, ""
    for sku, text_hash in (
        Product.objects.filter(is_active=True)
        .exclude(pk=product.pk)
        .values_list("external_id", "text_hash")
    ):
        vector = vectors[text_hash]
        cosine = float(own @ vector / np.linalg.norm(own) / np.linalg.norm(vector))
        if cosine > best_cosine:
            best_cosine, best_sku = cosine, sku
    assert len(answer.nearest) == 5
    assert answer.nearest[0].sku == best_sku
    assert answer.nearest[0].cosine == pytest.approx(best_cosine, abs=1e-5)
    assert [n.cosine for n in answer.nearest] == sorted(
        (n.cosine for n in answer.nearest), reverse=True
    )
    json.dumps(answer.to_dict())


@pytest.mark.django_db
def test_explain_slate_shows_picks_overrides_and_attributions(
    policy, admin, live_version
):
    first = serve(REGULAR).items.get(position=5).product
    boost = create_override(
        actor=admin,
        kind=OverrideKind.BOOST,
        product_id=first.pk,
        value=50.0,
        reason_code=ReasonCode.UNDER_EXPOSURE,
        statement="Seasonal range.",
    )
    slate = serve(REGULAR, seed=1)
    later = slate.items.exclude(product=first).order_by("position").first()
    assert later is not None
    create_override(
        actor=admin,
        kind=OverrideKind.DEMOTE,
        product_id=later.product_id,
        value=0.5,
        reason_code=ReasonCode.OVER_EXPOSURE,
        statement="Shown too often.",
    )

    answer = explain_slate(str(slate.pk), attributed_items=2)

    assert answer.customer == REGULAR
    assert answer.customer_groups == UK
    assert answer.policy_version == live_version.label
    assert answer.history is not None
    assert answer.history.baskets >= 2
    logged = list(slate.items.order_by("position"))
    assert [item.sku for item in answer.items] == [
        i.product.external_id for i in logged
    ]
    assert [item.propensity for item in answer.items] == [i.propensity for i in logged]
    by_sku = {item.sku: item for item in answer.items}
    # The boost was in force when the slate was served; the demotion came later.
    assert by_sku[first.external_id].constraint == f"boost #{boost.pk}"
    assert by_sku[first.external_id].position == 1
    assert by_sku[later.product.external_id].constraint is None
    for item in answer.items:
        assert item.recomputed_score is not None
        if item.sku != first.external_id:
            assert item.recomputed_score == pytest.approx(item.score, abs=1e-4)
        assert (item.attribution is not None) == (item.position <= 2)
    assert any("now" in note for note in answer.notes)
    json.dumps(answer.to_dict())
