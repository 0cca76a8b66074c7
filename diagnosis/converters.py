"""URL converters. `id` is <int:...> bounded to what the database can hold: a larger
number does not match (404), instead of reaching the database (a 500 on SQLite)."""

from __future__ import annotations

from django.urls import register_converter

from .validators import parse_id


class IdConverter:
    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = parse_id(value)
        if number is None:
            raise ValueError(f"{value} is not a database id")
        return number

    def to_url(self, value) -> str:
        return str(int(value))


# Registered once, on import, by whichever URLconf (pages or API) loads first.
register_converter(IdConverter, "id")
