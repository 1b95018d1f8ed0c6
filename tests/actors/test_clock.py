"""The contract's timestamp format for any time a row can hold (imports carry any year)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from actors.clock import iso, parse_iso

RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@given(st.datetimes(timezones=st.just(UTC)))
def test_iso_is_rfc3339_with_milliseconds_and_round_trips(moment: datetime) -> None:
    text = iso(moment)
    assert RFC3339_MS.match(text), text
    assert parse_iso(text) == moment.replace(microsecond=moment.microsecond // 1000 * 1000)
