"""The one typed configuration object, and the loader that validates a YAML file into it.

``model`` holds the frozen dataclasses; ``loader`` reads a file into them, with ``nodes``
(YAML plumbing and problem reporting), ``values`` and ``addresses`` (one reader per kind
of value), ``store_url`` and ``notice_template`` (what a store URL and a notice template
may say, shared with the store and the notice so both refuse the same).
"""

from governor.config.loader import load_config, parse_config
from governor.config.model import (
    NOTICE_STATUSES,
    AtCap,
    Config,
    CountMode,
    CrawlerConfig,
    LargeConfig,
    LimitsConfig,
    LogFormat,
    Network,
    NoticeConfig,
    OnStoreFailure,
    PacingConfig,
    TenantConfig,
    Timeouts,
    UpstreamURL,
)

__all__ = [
    "NOTICE_STATUSES",
    "AtCap",
    "Config",
    "CountMode",
    "CrawlerConfig",
    "LargeConfig",
    "LimitsConfig",
    "LogFormat",
    "Network",
    "NoticeConfig",
    "OnStoreFailure",
    "PacingConfig",
    "TenantConfig",
    "Timeouts",
    "UpstreamURL",
    "load_config",
    "parse_config",
]
