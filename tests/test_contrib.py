"""The service files in contrib/ are well formed and start `photosearch serve`: the process that keeps the index
current (its watch daemon, on by default) and also answers the CLI's queries (cli.py asks a running server)."""

from __future__ import annotations

import configparser
import plistlib

from conftest import REPO


def test_systemd_user_unit_runs_serve_and_stops_with_sigterm():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read(REPO / "contrib" / "photosearch.service")
    assert unit["Service"]["ExecStart"].endswith("photosearch serve")
    assert unit["Service"]["KillSignal"] == "SIGTERM"
    assert int(unit["Service"]["TimeoutStopSec"]) > 10  # the daemon promises to exit within 10 s
    assert unit["Install"]["WantedBy"] == "default.target"  # a user unit


def test_launchd_plist_runs_serve():
    with (REPO / "contrib" / "org.photosearch.plist").open("rb") as fh:
        plist = plistlib.load(fh)
    assert plist["Label"] == "org.photosearch"
    assert plist["ProgramArguments"][-1] == "serve"
    assert plist["ProgramArguments"][0].endswith("/photosearch")
    assert plist["RunAtLoad"] is True


def test_serve_watches_by_default():
    """The service files give no flag: serve must keep the index current unless told --no-watch."""
    from photosearch.cli import cli

    watch = next(p for p in cli.commands["serve"].params if p.name == "watch")
    assert watch.default is True
