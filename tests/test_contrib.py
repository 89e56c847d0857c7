"""The service files in contrib/ are well formed and start `photosearch watch`."""

from __future__ import annotations

import configparser
import plistlib

from conftest import REPO


def test_systemd_user_unit_runs_watch_and_stops_with_sigterm():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read(REPO / "contrib" / "photosearch-watch.service")
    assert unit["Service"]["ExecStart"].endswith("photosearch watch")
    assert unit["Service"]["KillSignal"] == "SIGTERM"
    assert int(unit["Service"]["TimeoutStopSec"]) > 10  # the daemon promises to exit within 10 s
    assert unit["Install"]["WantedBy"] == "default.target"  # a user unit


def test_launchd_plist_runs_watch():
    with (REPO / "contrib" / "org.photosearch.watch.plist").open("rb") as fh:
        plist = plistlib.load(fh)
    assert plist["Label"] == "org.photosearch.watch"
    assert plist["ProgramArguments"][-1] == "watch"
    assert plist["ProgramArguments"][0].endswith("/photosearch")
    assert plist["RunAtLoad"] is True
