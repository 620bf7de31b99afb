"""MovieLens title conventions -> display title, original title, year, aliases."""

from __future__ import annotations

import pytest

from batch.catalog.titles import move_article_front, parse_movielens_title


@pytest.mark.parametrize(
    ("raw", "title", "original", "year", "aliases"),
    [
        ("Toy Story (1995)", "Toy Story", "Toy Story", 1995, []),
        ("Matrix, The (1999)", "The Matrix", "The Matrix", 1999, []),
        ("American President, The (1995)", "The American President", "The American President", 1995, []),
        (
            "City of Lost Children, The (Cité des enfants perdus, La) (1995)",
            "The City of Lost Children",
            "La Cité des enfants perdus",
            1995,
            [],
        ),
        (
            "Twelve Monkeys (a.k.a. 12 Monkeys) (1995)",
            "Twelve Monkeys",
            "Twelve Monkeys",
            1995,
            ["12 Monkeys"],
        ),
        ("Seven (a.k.a. Se7en) (1995)", "Seven", "Seven", 1995, ["Se7en"]),
        ("Death Note: Desu nôto (2006–2007)", "Death Note: Desu nôto", "Death Note: Desu nôto", 2006, []),
        ("Fawlty Towers (1975-1979)", "Fawlty Towers", "Fawlty Towers", 1975, []),
        ("Cosmos (2014- )", "Cosmos", "Cosmos", 2014, []),
        ("(500) Days of Summer (2009)", "(500) Days of Summer", "(500) Days of Summer", 2009, []),
        ("Misérables, Les (1995)", "Les Misérables", "Les Misérables", 1995, []),
        ("Enfant, L' (2005)", "L'Enfant", "L'Enfant", 2005, []),
        ("Me, Myself & Irene (2000)", "Me, Myself & Irene", "Me, Myself & Irene", 2000, []),
        ("unknown", "unknown", "unknown", None, []),
        ("Hyena Road", "Hyena Road", "Hyena Road", None, []),
        ("  Babe   (1995) ", "Babe", "Babe", 1995, []),
    ],
)
def test_parse_movielens_title(
    raw: str, title: str, original: str, year: int | None, aliases: list[str]
) -> None:
    t = parse_movielens_title(raw)
    assert (t.title, t.original_title, t.year, t.aliases) == (title, original, year, aliases)


def test_article_is_moved_only_when_trailing() -> None:
    assert move_article_front("Good, the Bad and the Ugly, The") == "The Good, the Bad and the Ugly"
    assert move_article_front("Man Who Knew Too Much, The") == "The Man Who Knew Too Much"
    assert move_article_front("Crouching Tiger, Hidden Dragon") == "Crouching Tiger, Hidden Dragon"
