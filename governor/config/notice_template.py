"""An operator's notice template: the placeholders it may use, checked when the config loads.

The config loader refuses a template with an unknown placeholder; the notice
(:mod:`governor.proxy.notice`) renders it with the same parse, so what loads renders.
"""

from __future__ import annotations

import functools
import re
from string import Template
from typing import Final

#: The placeholders an operator template may use.
PLACEHOLDERS: Final = frozenset(
    {
        "tenant",
        "host",
        "used",
        "cap",
        "used_bytes",
        "cap_bytes",
        "resets_at",
        "resets_at_local",
        "timezone",
        "retry_after",
        "lang",
        "topup_url",
    }
)


# An HTML comment (https://html.spec.whatwg.org/#comments), and the abrupt forms <!--> and
# <!--->, which also end a comment. An unclosed one runs to the end, as in a browser.
_COMMENT: Final = re.compile(r"<!--(?:-?>|.*?-->|.*\Z)", re.DOTALL)


@functools.lru_cache(maxsize=64)
def operator_template(text: str) -> Template:
    """The template without its comments; compiled once per template text (not per request)."""
    return Template(_COMMENT.sub("", text))


def validate_template(text: str) -> list[str]:
    """The unknown placeholder names in an operator template, in order of first use.

    ``$$`` (a literal dollar) and a ``$`` not followed by a name are not
    placeholders and are left as they are when rendering; neither is anything in an
    HTML comment, which is removed.
    """
    identifiers = operator_template(text).get_identifiers()
    return [name for name in identifiers if name not in PLACEHOLDERS]
