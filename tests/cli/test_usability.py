"""
The command line as a seasoned user expects it (issue 16), through the injected console:
options anywhere, ``CLOSE_BASE_URL``, hints that fit the failure, clean piped tables,
help for every option, ``pipelines``/``users`` in every format.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Callable
from typing import Any

import pytest

from closefunnel.cli._parser import build_parser
from closefunnel.emulator import Emulator

from .conftest import Run

Cli = Callable[..., Run]
Library = Callable[..., Any]


def test_verbose_after_the_command_and_one_prefix(cli: Cli, emu: Emulator) -> None:
    pipeline = emu.dataset.pipelines[0].id
    emu.fail_next(1, "500", path="report/funnel")
    run = cli("totals", "--pipeline", pipeline, "-v", "--format", "json")
    assert run.code == 0, run.err
    assert "closefunnel: closefunnel.retry:" in run.err  # logged, once prefixed
    assert "closefunnel: closefunnel:" not in run.err
    assert cli("pipelines", "--verbose").code == 0
    assert cli("-v", "pipelines").code == 0


def test_close_base_url_sets_the_base_url(
    cli: Cli, emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOSE_BASE_URL", emu.base_url)
    run = cli("pipelines", "--format", "json", connect=False)
    assert run.code == 0, run.err
    assert [p["id"] for p in json.loads(run.out)] == [p.id for p in emu.dataset.pipelines]
    # --base-url still wins over the variable.
    monkeypatch.setenv("CLOSE_BASE_URL", "http://127.0.0.1:9/api/v1/")
    assert cli("pipelines", "--format", "json").code == 0


def test_a_404_from_a_base_url_that_is_no_api_root_blames_the_url(cli: Cli, emu: Emulator) -> None:
    root = emu.base_url.removesuffix("api/v1/")
    pipeline = emu.dataset.pipelines[0].id
    run = cli(
        "totals", "--pipeline", pipeline, "--base-url", root, "--tz-offset", "0", connect=False
    )
    assert run.code == 1
    assert run.err.count("\n") == 1
    assert "/api/v1/" in run.err
    assert "--base-url" in run.err
    assert "closefunnel pipelines" not in run.err


def test_an_unknown_saved_search_names_the_option(cli: Cli, emu: Emulator) -> None:
    pipeline = emu.dataset.pipelines[0].id
    run = cli("totals", "--pipeline", pipeline, "--saved-search", "save_nope")
    assert run.code == 1
    assert "--saved-search" in run.err


def test_401_is_one_sentence_without_repetition(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOSE_API_KEY", "api_" + "x" * 22 + ".notthesecret")
    run = cli("pipelines")
    assert run.code == 1
    assert run.err.count("401") == 1
    assert "Close answered" not in run.err
    assert "check the API key or token" not in run.err
    assert run.err.rstrip().endswith("check CLOSE_API_KEY or --api-key-file")


def test_piped_tables_have_no_trailing_padding_and_whole_titles(cli: Cli, emu: Emulator) -> None:
    pipeline = emu.dataset.pipelines[0]
    run = cli("totals", "--pipeline", pipeline.id)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines
    assert [line for line in lines if line != line.rstrip()] == []
    assert f"{pipeline.name} · active stage cohort, this month" in lines


def _actions(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    found: list[tuple[str, argparse.Action]] = []
    for action in parser._actions:  # argparse has no public walk of its options
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if name != "emulator":  # the emulator's own options: closefunnel.emulator
                    found += [(f"{name} {flag}", a) for flag, a in _actions(sub)]
        else:
            found.append(
                (action.option_strings[0] if action.option_strings else action.dest, action)
            )
    return found


def test_every_option_has_help() -> None:
    missing = [name for name, action in _actions(build_parser()) if not action.help]
    assert missing == []


def test_pipelines_and_users_in_every_format(cli: Cli, emu: Emulator) -> None:
    for command, rows in (("pipelines", emu.dataset.pipelines), ("users", emu.dataset.users)):
        ids = {item.id for item in rows}
        as_json = cli(command, "--format", "json")
        assert as_json.code == 0, as_json.err
        assert {item["id"] for item in json.loads(as_json.out)} == ids
        as_csv = cli(command, "--format", "csv")
        assert as_csv.code == 0, as_csv.err
        column = "pipeline_id" if command == "pipelines" else "user_id"
        parsed = list(csv.DictReader(io.StringIO(as_csv.out, newline="")))
        assert {row[column] for row in parsed} == ids
        table = cli(command)
        assert table.code == 0
        assert all(item_id in table.out for item_id in ids)
    statuses = sum(len(p.statuses) for p in emu.dataset.pipelines)
    pipelines_csv = cli("pipelines", "--format", "csv").out
    assert len(list(csv.DictReader(io.StringIO(pipelines_csv, newline="")))) == statuses
