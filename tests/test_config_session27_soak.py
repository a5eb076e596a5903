"""Session 27 soak of the Export API source's config: a from_date before Mixpanel's first
export day was found only by the run's first query (the run recorded, exit 2), and a
date written with a time was shown as Python's repr (datetime.datetime(2024, 11, 1, ...))."""

from __future__ import annotations

from pathlib import Path

from config_kit import problems
from mp2amp.config import load_config

DATES = "[source]\nfrom_date = {}\nto_date = 2024-01-02\n"


def test_a_from_date_before_the_export_api_serves_is_refused_up_front(tmp_path: Path) -> None:
    assert problems(tmp_path, DATES.format("2010-01-01")) == [
        "source.from_date: 2010-01-01 is before 2011-07-10, the first day Mixpanel's "
        "Export API serves; set it to that day or later"]


def test_the_first_day_the_export_api_serves_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "mp2amp.toml"
    path.write_text(DATES.format("2011-07-10"))
    assert str(load_config(path, env={}).source.from_date) == "2011-07-10"


def test_a_date_with_a_time_is_shown_as_written(tmp_path: Path) -> None:
    assert problems(tmp_path, DATES.format("2024-01-01T10:00:00")) == [
        "source.from_date: must be a date like 2024-01-31 (the day alone), got "
        "2024-01-01T10:00:00"]
    assert problems(tmp_path, DATES.format("10:00:00")) == [
        "source.from_date: must be a date like 2024-01-31 (the day alone), got 10:00:00"]
