"""What users read about why a photo was not assessed.

The model's and Python's messages can name server paths ("... expected model.keras and
metadata.json in /srv/skincare/ml/artifacts/model"): the people reading a result have no
use for them and should not see the server's layout. The log keeps the whole message.
"""

from __future__ import annotations

import re

# An absolute path (POSIX or Windows), as in "... in /srv/skincare/ml/artifacts/model".
_SERVER_PATH = re.compile(r"""(?<![\w.])(?:[A-Za-z]:)?[/\\](?:[^\s'"(),;:/\\]+[/\\]?)+""")


def public_reason(text: str) -> str:
    """A reason as users see it: every server path replaced by its last part when that is a
    file name ("model.keras"), else by "the server's folder" (the log keeps the whole text)."""

    def hide(match: re.Match) -> str:
        last = match.group(0).rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]
        return last if "." in last.strip(".") else "the server's folder"

    return _SERVER_PATH.sub(hide, text)
