"""The one typed configuration object, and the loader that validates a YAML file into it.

``model`` holds the frozen dataclasses; ``loader`` reads a file into them, with ``nodes``
(YAML plumbing and problem reporting) and ``values`` (one reader per kind of value).
"""

from governor.config.loader import load_config, parse_config
from governor.config.model import (
    NOTICE_STATUSES,
    AtCap,
    Config,
    CountMode,
    LimitsConfig,
    LogFormat,
    Network,
    NoticeConfig,
    OnStoreFailure,
    TenantConfig,
    Timeouts,
    UpstreamURL,
)

__all__ = [
    "NOTICE_STATUSES",
    "AtCap",
    "Config",
    "CountMode",
    "LimitsConfig",
    "LogFormat",
    "Network",
    "NoticeConfig",
    "OnStoreFailure",
    "TenantConfig",
    "Timeouts",
    "UpstreamURL",
    "load_config",
    "parse_config",
]
