"""Session 22, third review (of f02971a): which folders a glob passes over, refuses or
warns about (``selection.selected``/``Slices``, ``files._expand_local``/``_expand_remote``),
local and remote (moto S3 server of ``test_remote_scale_session22_review``).

Guards: the remote hour glob warns of an unfinished slice once; a local glob passes over a
project folder holding only profiles. Fixed: a remote glob refused a project folder holding
only profiles (the local one passed it over), and hours named as separate paths never warned
of the unfinished one (slices are now judged over all the paths of one list), and (session
29) a glob matching the part files themselves saw no markers. Not a defect: a
folder of a marker and an empty extensionless part is refused (data not named as events).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tests.extract import test_remote_scale_session22_review as r22
from tests.extract.test_glob_listing_session22_second_review import (  # its helpers
    EV,
    Counted,
    urls,
    write,
)
from tests.extract.test_remote_scale_session22_review import put_all

PROFILE = b'{"distinct_id":"u1","properties":{}}\n'
counted = r22.counted  # the moto S3 server fixture (module scope)


def warned(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if "complete" in r.getMessage() and text in r.getMessage()]


# a bucket of two projects' exports: 77's events, 78 with its profiles pipeline only
PROJECTS = {"77/2024/01/01/00/part-0.export.json": EV, "77/2024/01/01/00/complete": b"",
            "78/mp_people_data/part-0.json": PROFILE}


# --- guards -----------------------------------------------------------------------------


def test_local_glob_over_projects_passes_over_a_profiles_only_project(tmp_path: Path) -> None:
    write(tmp_path, PROJECTS)
    assert urls([f"{tmp_path}/*"]) == [f"{tmp_path}/77/2024/01/01/00/part-0.export.json"]


def test_remote_hour_glob_warns_once_of_the_unfinished_hour(
        counted: Counted, caplog: pytest.LogCaptureFixture) -> None:
    _, options = counted
    put_all(options, "r22c-hours", {"77/2024/01/01/00/part-0.export.json": EV,
                                    "77/2024/01/01/00/complete": b"",
                                    "77/2024/01/01/01/part-1.export.json": EV})
    day = "s3://r22c-hours/77/2024/01/01"
    with caplog.at_level(logging.WARNING, logger="mp2amp.extract"):
        assert urls([f"{day}/*"], options) == [f"{day}/00/part-0.export.json",
                                               f"{day}/01/part-1.export.json"]
    assert len(warned(caplog, f"{day}/01")) == 1


# --- defects ------------------------------------------------------------------------------


def test_remote_glob_over_projects_passes_over_a_profiles_only_project_as_local_does(
        counted: Counted) -> None:
    _, options = counted
    put_all(options, "r22c-projects", PROJECTS)
    # local: [.../77/.../part-0.export.json] (the guard above); remote: the whole run
    # stopped with "s3://r22c-projects/78 contains no event files"
    assert urls(["s3://r22c-projects/*"], options) == [
        "s3://r22c-projects/77/2024/01/01/00/part-0.export.json"]


# "file glob" was a strict xfail until session 29: a glob matching the part files themselves
# never saw the hours' complete markers, so the unfinished hour was not named
@pytest.mark.parametrize("how", ["named", "globbed", "file glob"])
def test_hours_given_as_separate_paths_warn_of_the_unfinished_hour(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str) -> None:
    write(tmp_path, {"77/2024/01/01/00/part-0.export.json": EV,
                     "77/2024/01/01/00/complete": b"",
                     "77/2024/01/01/01/part-1.export.json": EV})  # hour 01: still written
    day = f"{tmp_path}/77/2024/01/01"
    paths = {"named": [f"{day}/00", f"{day}/01"], "globbed": [f"{day}/00*", f"{day}/01*"],
             "file glob": [f"{day}/*/*"]}[how]  # the last: one path, its files matched
    with caplog.at_level(logging.WARNING, logger="mp2amp.extract"):
        found = urls(paths)
    assert found == [f"{day}/00/part-0.export.json", f"{day}/01/part-1.export.json"]
    assert warned(caplog, f"{day}/01"), "hour 01 read without the warning its day gives"


def test_remote_file_glob_warns_of_the_unfinished_hour(
        counted: Counted, caplog: pytest.LogCaptureFixture) -> None:
    # session 29: the glob matches the part files and the markers themselves (day/*/*)
    _, options = counted
    put_all(options, "r29-file-glob", {"77/2024/01/01/00/part-0.export.json": EV,
                                       "77/2024/01/01/00/complete": b"",
                                       "77/2024/01/01/01/part-1.export.json": EV})
    day = "s3://r29-file-glob/77/2024/01/01"
    with caplog.at_level(logging.WARNING, logger="mp2amp.extract"):
        assert urls([f"{day}/*/*"], options) == [f"{day}/00/part-0.export.json",
                                                 f"{day}/01/part-1.export.json"]
    assert len(warned(caplog, f"{day}/01")) == 1
    assert not warned(caplog, f"{day}/00")
