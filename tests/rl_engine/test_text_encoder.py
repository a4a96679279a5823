"""The real MiniLM weights, loaded offline, give sensible product vectors."""

import numpy as np
import pytest

from rl_engine.core.text_encoder import TextEncoder


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(device="cpu")


def test_vectors_are_unit_length_and_repeatable(encoder):
    titles = ["REGENCY CAKESTAND 3 TIER", "JUMBO BAG RED RETROSPOT"]

    first = encoder.encode(titles)
    second = encoder.encode(list(reversed(titles)), batch_size=1)

    assert first.shape == (2, 384)
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert np.allclose(first, second[::-1], atol=1e-5)


@pytest.mark.parametrize(
    ("title", "near_duplicate", "unrelated"),
    [
        (
            "WHITE HANGING HEART T-LIGHT HOLDER",
            "RED HANGING HEART T-LIGHT HOLDER",
            "REGENCY CAKESTAND 3 TIER",
        ),
        (
            "JUMBO BAG RED RETROSPOT",
            "JUMBO BAG PINK POLKADOT",
            "SET OF 3 CAKE TINS PANTRY DESIGN",
        ),
        (
            "LUNCH BAG RED RETROSPOT",
            "LUNCH BAG  BLACK SKULL.",
            "ASSORTED COLOUR BIRD ORNAMENT",
        ),
        (
            "PACK OF 72 RETROSPOT CAKE CASES",
            "60 TEATIME FAIRY CAKE CASES",
            "DOORMAT UNION FLAG",
        ),
    ],
)
def test_near_duplicate_titles_are_nearer_than_unrelated_ones(
    encoder, title, near_duplicate, unrelated
):
    vectors = encoder.encode([title, near_duplicate, unrelated])

    near = float(vectors[0] @ vectors[1])
    far = float(vectors[0] @ vectors[2])
    assert near > far + 0.2, (near, far)
