"""What every test suite shares (unit, functional, store, bench, soak), one of each so a fix
lands once: ``poll`` (eventually, wait_until), ``ports`` (free_port, held_port), ``raw`` (the
byte-counting RawClient), ``clock`` (FakeClock), ``configs`` (write_config)."""

from tests.support.clock import FakeClock, seoul
from tests.support.configs import write_config
from tests.support.poll import eventually, wait_until
from tests.support.ports import free_port, held_port
from tests.support.raw import RawClient, RawResponse, request

__all__ = [
    "FakeClock",
    "RawClient",
    "RawResponse",
    "eventually",
    "free_port",
    "held_port",
    "request",
    "seoul",
    "wait_until",
    "write_config",
]
