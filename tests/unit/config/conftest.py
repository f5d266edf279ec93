"""Every config test runs under both YAML composers: libyaml's and PyYAML's own.

The loader composes with libyaml where PyYAML has it and falls back to the pure
composer; both must give the same config and the same ``file:line: key`` problems.
Module-scoped, so Hypothesis tests (which refuse function-scoped fixtures) run
under both as well.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from governor.config import nodes
from governor.config.composer import PARSERS

COMPOSERS = ("libyaml", "pure")


@pytest.fixture(scope="module", params=sorted(COMPOSERS), autouse=True)
def composer(request: pytest.FixtureRequest) -> Iterator[str]:
    """Compose with the composer named by the parameter, then put the default back."""
    if request.param not in PARSERS:
        pytest.skip("PyYAML was built without libyaml")
    default = nodes.PARSER
    nodes.PARSER = request.param
    try:
        yield request.param
    finally:
        nodes.PARSER = default
