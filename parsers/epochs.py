"""Calendar times read from logs turned into epochs: the zone a time without an offset is read
in, and the year a date written without one belongs to. One rule for every reader
(`parsers.syslog`, `parsers.dates`): a yearless date is in the year of `now`, unless that puts
it more than `FUTURE_SLACK` ahead of `now` ("Dec 31 23:59:59" read on Jan 1), then the year
before. No clock: `now` is the caller's.
"""

from __future__ import annotations

from datetime import datetime, tzinfo

# A day of slack absorbs clock skew between hosts and a zone the reader guessed wrong.
FUTURE_SLACK = 86400.0
# Per zone: the [start, end) epochs of the year `now` was last found in, and that year.
_year_windows: dict[tzinfo | None, tuple[float, float, int]] = {}
_YEAR_WINDOWS_MAX = 64


def year_of(now: float, tz: tzinfo | None) -> int | None:
    """The year `now` is in, in zone `tz` (None: the local zone); None if out of range."""
    window = _year_windows.get(tz)
    if window is not None and window[0] <= now < window[1]:
        return window[2]
    try:
        year = datetime.fromtimestamp(now, tz).year
        window = (datetime(year, 1, 1, tzinfo=tz).timestamp(), datetime(year + 1, 1, 1, tzinfo=tz).timestamp(), year)
    except (ValueError, OverflowError, OSError):
        return None
    if len(_year_windows) >= _YEAR_WINDOWS_MAX:
        _year_windows.clear()
    _year_windows[tz] = window
    return year


def epoch_of(year: int, month: int, day: int, hour: int, minute: int, second: int,
             tz: tzinfo | None) -> float | None:
    """The epoch of a wall-clock time in zone `tz` (None: the local zone); None if there is no
    such date (Feb 30) or it is out of range."""
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=tz).timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def is_ahead(epoch: float, now: float) -> bool:
    """Is a time read without its year too far ahead of `now` to be this year's?"""
    return epoch > now + FUTURE_SLACK


def yearless_epoch(month: int, day: int, hour: int, minute: int, second: int, now: float,
                   tz: tzinfo | None) -> float | None:
    """The epoch of a date written without a year: in the year of `now`, or the year before
    when that is ahead of `now` (or the date does not exist this year, as Feb 29)."""
    year = year_of(now, tz)
    if year is None:
        return None
    found = epoch_of(year, month, day, hour, minute, second, tz)
    if found is None or is_ahead(found, now):
        found = epoch_of(year - 1, month, day, hour, minute, second, tz)
    return found
