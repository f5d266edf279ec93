"""Detection of warnings, pure: each event once per period, in the order it happened."""

from __future__ import annotations

from dataclasses import dataclass

from governor.core.alerts import Alert, Alerts

CAP = 1000
WARN = (0.5, 0.9)


@dataclass(frozen=True)
class Seen:
    """A tenant's period as the flusher would report it."""

    tenant: str
    period: str
    used_bytes: int
    cap_bytes: int = CAP

    @property
    def blocked(self) -> bool:
        return self.used_bytes >= self.cap_bytes

    @property
    def would_block(self) -> bool:
        return False


def names(events: list[Alert[Seen]]) -> list[str]:
    return [e.mark for e in events]


def test_each_threshold_once_per_period_then_blocked() -> None:
    alerts: Alerts[Seen] = Alerts()
    assert names(alerts.observe(Seen("a", "d1", 100), WARN, 1.0)) == []
    assert names(alerts.observe(Seen("a", "d1", 500), WARN, 2.0)) == ["warn:0.5"]
    assert names(alerts.observe(Seen("a", "d1", 600), WARN, 3.0)) == []  # not again
    assert names(alerts.observe(Seen("a", "d1", 950), WARN, 4.0)) == ["warn:0.9"]
    assert names(alerts.observe(Seen("a", "d1", 1000), WARN, 5.0)) == ["blocked:1000"]
    assert names(alerts.observe(Seen("a", "d1", 1200), WARN, 6.0)) == []


def test_a_jump_past_every_threshold_gives_each_in_order_with_the_time_given() -> None:
    alerts: Alerts[Seen] = Alerts()
    events = alerts.observe(Seen("a", "d1", 1000), WARN, 42.0)
    assert names(events) == ["warn:0.5", "warn:0.9", "blocked:1000"]
    assert [e.time for e in events] == [42.0] * 3
    assert [e.threshold for e in events] == [0.5, 0.9, None]


def test_reopened_at_a_new_period_and_thresholds_count_again() -> None:
    alerts: Alerts[Seen] = Alerts()
    alerts.observe(Seen("a", "d1", 1000), WARN, 1.0)
    events = alerts.observe(Seen("a", "d2", 0), WARN, 2.0)
    assert names(events) == ["reopened:period"]
    assert events[0].reason == "period"
    assert names(alerts.observe(Seen("a", "d2", 500), WARN, 3.0)) == ["warn:0.5"]


def test_a_grant_reopens_by_cap_and_a_new_block_at_the_new_cap_is_reported() -> None:
    alerts: Alerts[Seen] = Alerts()
    alerts.observe(Seen("a", "d1", 1000), WARN, 1.0)
    assert names(alerts.observe(Seen("a", "d1", 1000, cap_bytes=2000), WARN, 2.0)) == [
        "reopened:cap:2000"
    ]
    assert names(alerts.observe(Seen("a", "d1", 2000, cap_bytes=2000), WARN, 3.0)) == [
        "blocked:2000"
    ]


def test_a_reset_reopens_by_reset_and_thresholds_are_not_repeated_that_period() -> None:
    alerts: Alerts[Seen] = Alerts()
    alerts.observe(Seen("a", "d1", 1000), WARN, 1.0)
    assert names(alerts.observe(Seen("a", "d1", 0), WARN, 2.0)) == ["reopened:reset:1000"]
    assert names(alerts.observe(Seen("a", "d1", 950), WARN, 3.0)) == []
    assert names(alerts.observe(Seen("a", "d1", 1000), WARN, 4.0)) == ["blocked:1000"]


def test_tenants_are_apart_and_a_forgotten_one_starts_afresh() -> None:
    alerts: Alerts[Seen] = Alerts()
    assert names(alerts.observe(Seen("a", "d1", 600), WARN, 1.0)) == ["warn:0.5"]
    assert names(alerts.observe(Seen("b", "d1", 600), WARN, 1.0)) == ["warn:0.5"]
    alerts.forget_all_but({"b"})
    assert names(alerts.observe(Seen("a", "d1", 600), WARN, 2.0)) == ["warn:0.5"]
    assert names(alerts.observe(Seen("b", "d1", 600), WARN, 2.0)) == []


def test_a_first_sight_of_an_open_tenant_is_no_reopening() -> None:
    alerts: Alerts[Seen] = Alerts()
    assert alerts.observe(Seen("a", "d2", 0), WARN, 1.0) == []
