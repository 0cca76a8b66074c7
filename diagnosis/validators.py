"""Checks shared by the forms, the models (and so the admin) and the API.

Ids: the database keeps them as signed 64-bit integers, so a larger number given
as an id cannot name anything, and must be refused before it reaches the database
(SQLite raises OverflowError on it, a 500).

Text: Unicode's bidirectional controls reorder what is shown after them
("\u202eevil\u202c" shows as "live"), so a lesion name or a note could show a
reviewer something other than what is stored. They are refused in free text.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.utils.deconstruct import deconstructible

MAX_ID = 2**63 - 1

# The explicit embeddings, overrides and isolates, the implicit marks, and the Arabic letter mark.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


def parse_id(value) -> int | None:
    """A positive database id from a query string or form value, or None if it is not one."""
    text = str(value).strip() if value is not None else ""
    if not text.isascii() or not text.isdigit():
        return None
    number = int(text)
    return number if 0 < number <= MAX_ID else None


@deconstructible
class NoBidiControls:
    message = (
        "Remove the invisible text-direction characters (Unicode bidirectional controls such as U+202E): "
        "they make the text show differently from what is stored."
    )
    code = "bidi_control"

    def __call__(self, value) -> None:
        if value and any(ch in BIDI_CONTROLS for ch in str(value)):
            raise ValidationError(self.message, code=self.code)

    def __eq__(self, other) -> bool:
        return isinstance(other, NoBidiControls)


no_bidi_controls = NoBidiControls()
