"""MovieLens title conventions: ``"Matrix, The (1999)"`` -> title ``"The Matrix"``, year 1999.

GroupLens titles carry the year in trailing parentheses and move leading articles to the end
("Matrix, The"), library-catalogue style; foreign films often add the original title in a second
parenthesis: ``"City of Lost Children, The (Cité des enfants perdus, La) (1995)"``, and some add an
alias: ``"Seven (a.k.a. Se7en) (1995)"``. We normalise to how people write and search titles
("The Matrix"), keep a foreign original title in ``original_title`` (articles moved back too), and
drop "a.k.a." aliases into ``aliases`` (they end up as tags, so they are still searchable and
embedded). Anything we do not recognise is left exactly as given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Trailing "(1995)", "(2006-2007)", "(2006– )", "(2006-)": TV series in ml-25m use ranges.
_YEAR = re.compile(r"\s*\((\d{4})(?:\s*[-–]\s*(?:\d{4})?\s*)?\)\s*$")
# A trailing parenthesised group that is not a year.
_PAREN = re.compile(r"\s*\(([^()]*)\)\s*$")
_AKA = re.compile(r"^\s*a\.?k\.?a\.?\s+", re.IGNORECASE)

# Articles that GroupLens moves to the end, by language. "L'" and the like attach without a space.
_ARTICLES = (
    "The",
    "A",
    "An",
    "La",
    "Le",
    "Les",
    "L'",
    "Il",
    "I",
    "Lo",
    "Gli",
    "El",
    "Los",
    "Las",
    "Un",
    "Une",
    "Una",
    "Uno",
    "Der",
    "Die",
    "Das",
    "Den",
    "Det",
    "De",
    "Het",
    "Ein",
    "Eine",
    "O",
    "Os",
    "As",
    "Ta",
    "To",
    "Hai",
)
_ARTICLE_SUFFIX = re.compile(
    r"^(?P<body>.+?),\s*(?P<art>" + "|".join(re.escape(a) for a in _ARTICLES) + r")$"
)


@dataclass(frozen=True)
class ParsedTitle:
    """What a raw MovieLens title says: display title, original title, year and aliases."""

    title: str
    original_title: str
    year: int | None
    aliases: list[str] = field(default_factory=list)


def move_article_front(name: str) -> str:
    """Move a trailing article to the front: ``"Matrix, The"`` -> ``"The Matrix"``.

    Also ``"Haine, La"`` -> ``"La Haine"`` and ``"Enfant, L'"`` -> ``"L'Enfant"`` (no space after L').

    Only a trailing ``", <article>"`` is moved; titles like ``"Me, Myself and Irene"`` stay as they are.
    """
    m = _ARTICLE_SUFFIX.match(name.strip())
    if not m:
        return name.strip()
    art, body = m.group("art"), m.group("body").strip()
    return f"{art}{body}" if art.endswith("'") else f"{art} {body}"


def parse_movielens_title(raw: str) -> ParsedTitle:
    """Split a GroupLens title into display title, original title, year and aliases.

    >>> parse_movielens_title("Matrix, The (1999)")
    ParsedTitle(title='The Matrix', original_title='The Matrix', year=1999, aliases=[])
    >>> parse_movielens_title("Haine, La (Hate) (1995)").original_title
    'Hate'
    """
    s = " ".join(raw.split())
    year: int | None = None
    m = _YEAR.search(s)
    if m:
        year = int(m.group(1))
        s = s[: m.start()].rstrip()
    aliases: list[str] = []
    original = ""
    # Peel up to two trailing parentheticals: "(a.k.a. X)" aliases and one "(Original Title)".
    for _ in range(2):
        pm = _PAREN.search(s)
        if not pm or pm.start() == 0:
            break
        inner = pm.group(1).strip()
        if not inner:
            break
        if _AKA.match(inner):
            aliases.append(_AKA.sub("", inner).strip())
        elif not original:
            original = move_article_front(inner)
        else:
            break
        s = s[: pm.start()].rstrip()
    title = move_article_front(s) if s else raw.strip()
    return ParsedTitle(title=title, original_title=original or title, year=year, aliases=aliases)
