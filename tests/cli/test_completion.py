"""
Shell completion: the scripts ``closefunnel completion SHELL`` prints, run by real shells.

The slow tests source the printed script in a real bash, zsh and fish, ask for completions
the way each shell does, and let the script run the installed ``closefunnel`` entry point
through argcomplete's protocol (environment variables, candidates on descriptor 8). Only
zsh's display function ``_describe`` is replaced, by one printing the candidates it was
handed: without a terminal zsh has nowhere to show them, and everything up to that point
(the zsh branch of the script, the process, the protocol) is the real one.

A shell that is not installed skips its test, except under ``CI=true``, where a skip
would hide an untested shell (.ci/run installs zsh and fish).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from closefunnel.cli._parser import build_parser
from tests.cli.conftest import Run
from tests.needs import missing

#: The directory holding the installed ``closefunnel`` script of this interpreter.
BIN = Path(sys.executable).parent
FORMATS = ["csv", "html", "json", "table"]
FORMAT_HELP = "output: table, json, csv, html (default: table; data goes to stdout)"
SUBCOMMANDS = ["bulk", "completion", "demo", "emulator", "pipelines", "serve", "totals", "users"]


def shell(name: str) -> str:
    """The path of shell *name*: a skip without it, a failure under CI=true."""
    path = shutil.which(name)
    if path is None:
        missing(f"{name} is not installed (apt-get install {name})")
    return path


def shell_env() -> dict[str, str]:
    """The environment for a shell whose ``closefunnel`` is this interpreter's."""
    if not (BIN / "closefunnel").exists():
        pytest.fail(f"no closefunnel script beside {sys.executable}: pip install -e .")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("_ARC", "COMP_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_shell(argv: list[str], script: str, tmp_path: Path) -> list[str]:
    """Run *script* in a shell; return its stdout's lines (a failure shows its stderr)."""
    path = tmp_path / "ask"
    path.write_text(script)
    proc = subprocess.run(
        [*argv, str(path)],
        env=shell_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def answers(lines: list[str]) -> Iterator[list[str]]:
    """Split the shells' output into one sorted candidate list per question."""
    block: list[str] = []
    for line in lines:
        if line == "==":
            yield sorted(block)
            block = []
        elif line:
            block.append(line)


def completion_script(cli_plain: Callable[..., Run], name: str, tmp_path: Path) -> Path:
    run = cli_plain("completion", name)
    assert run.code == 0, run.err
    assert run.err == ""
    path = tmp_path / f"closefunnel.{name}"
    path.write_text(run.out)
    return path


# -- in process: the command, the option metadata, and what a normal run imports ---------------


@pytest.mark.parametrize(
    ("name", "registers"),
    [
        ("bash", "-F _python_argcomplete closefunnel"),
        ("zsh", "compdef _python_argcomplete closefunnel"),
        ("fish", "complete --command closefunnel"),
    ],
)
def test_completion_prints_the_script_for_each_shell(
    cli_plain: Callable[..., Run], name: str, registers: str
) -> None:
    run = cli_plain("completion", name)
    assert run.code == 0
    assert registers in run.out
    assert run.err == ""


def test_completion_refuses_an_unknown_shell(cli_plain: Callable[..., Run]) -> None:
    run = cli_plain("completion", "tcsh")
    assert run.code == 2
    assert "invalid choice: 'tcsh'" in run.err
    assert run.out == ""


def test_completion_help_shows_an_example_per_shell(cli_plain: Callable[..., Run]) -> None:
    run = cli_plain("completion", "--help")
    assert run.code == 0
    for example in (
        'eval "$(closefunnel completion bash)"',
        'eval "$(closefunnel completion zsh)"',
        "closefunnel completion fish > ~/.config/fish/completions/closefunnel.fish",
    ):
        assert example in run.out
    top = cli_plain("--help")
    assert "completion" in top.out
    assert "bash, zsh or fish" in top.out


def test_range_options_offer_the_range_names() -> None:
    parser = build_parser()
    totals = next(a for a in parser._actions if a.dest == "command").choices["totals"]  # type: ignore[index]
    by_dest = {a.dest: a for a in totals._actions}
    for dest in ("range", "cohort_range"):
        offered = by_dest[dest].completer()  # type: ignore[attr-defined]
        assert "last-quarter" in offered
        assert "same-days-last-year" not in offered  # a base range cannot be same-days
    compare = by_dest["compare"].completer()  # type: ignore[attr-defined]
    assert {"last-month", "all-time", "same-days-last-year"} <= set(compare)


def test_parsing_never_imports_argcomplete(
    cli_plain: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes `import argcomplete` raise ImportError; its submodules
    # (imported by earlier tests) go too, or `import argcomplete.x` would find them.
    for name in [n for n in sys.modules if n.startswith("argcomplete.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "argcomplete", None)
    monkeypatch.setenv("_ARGCOMPLETE", "1")  # a caller's argv is never a completion request
    monkeypatch.setenv("COMP_LINE", "closefunnel tot")
    # Parsing and dispatch only (a whole command in a fresh interpreter: the slow test below).
    assert cli_plain("--version").code == 0
    assert "--compare RANGE" in cli_plain("totals", "--help").out
    run = cli_plain("totals", "--range", "this-month")
    assert run.code == 2
    assert "--pipeline" in run.err
    with pytest.raises(ImportError):  # the block works: the completion command needs it
        cli_plain("completion", "bash")


# -- real processes: the protocol itself, and each shell ---------------------------------------


@pytest.mark.slow
def test_a_normal_process_never_imports_argcomplete(tmp_path: Path) -> None:
    # In a fresh interpreter, so an import at module level (which the in-process test
    # above cannot see: the modules are loaded by then) shows too.
    probe = (
        "import io, sys\n"
        "from closefunnel.cli import main\n"
        "out = io.StringIO()\n"
        "code = main(['demo', '--now', '2026-11-18T15:30:00Z'], stdout=out, stderr=io.StringIO())\n"
        "loaded = sorted(m for m in sys.modules if m.partition('.')[0] == 'argcomplete')\n"
        "print(code, 'Sales' in out.getvalue(), loaded)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        env=shell_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.stdout.split() == ["0", "True", "[]"], proc.stderr


@pytest.mark.slow
def test_the_entry_point_answers_on_descriptor_8_and_prints_nothing_else(tmp_path: Path) -> None:
    out_r, out_w = os.pipe()
    debug_r, debug_w = os.pipe()
    env = shell_env() | {
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_IFS": "\n",
        "COMP_LINE": "closefunnel totals --format ",
        "COMP_POINT": str(len("closefunnel totals --format ")),
    }

    def descriptors() -> None:  # in the child: what the script's `8>&1 9>&2` do
        os.dup2(out_w, 8)
        os.dup2(debug_w, 9)

    proc = subprocess.Popen(
        [str(BIN / "closefunnel")],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        close_fds=False,  # else 8 and 9 would be closed after descriptors() ran
        preexec_fn=descriptors,
    )
    os.close(out_w)
    os.close(debug_w)
    stdout, stderr = proc.communicate(timeout=60)
    with os.fdopen(out_r) as answer, os.fdopen(debug_r) as debug:
        candidates, debug_text = answer.read(), debug.read()
    assert proc.returncode == 0
    assert sorted(candidates.split("\n")) == FORMATS
    assert (stdout, stderr, debug_text) == (b"", b"", "")


@pytest.mark.slow
def test_bash_completes_commands_options_and_choices(
    cli_plain: Callable[..., Run], tmp_path: Path
) -> None:
    script = completion_script(cli_plain, "bash", tmp_path)
    (tmp_path / "key.txt").write_text("api_x.y")
    asked = [
        "closefunnel tot",
        "closefunnel totals --format ",
        "closefunnel bulk --format j",
        "closefunnel totals --compare same-days-last-",
        "closefunnel totals --range last-",
        "closefunnel ",
        "closefunnel totals --pipeline ",
        "closefunnel totals --api-key-file ke",
        "closefunnel emulator --dataset ",
    ]
    # What readline would set before calling the completion function for the last word.
    ask = r"""
ask() {
    COMP_LINE=$1; COMP_POINT=${#COMP_LINE}
    read -ra COMP_WORDS <<<"$COMP_LINE"
    [[ $COMP_LINE == *' ' ]] && COMP_WORDS+=('')
    COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
    COMPREPLY=()
    _python_argcomplete closefunnel "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
    local reply; for reply in "${COMPREPLY[@]}"; do printf '%s\n' "${reply% }"; done
    echo ==
}
"""
    body = f"source {script}\n{ask}" + "".join(f"ask '{line}'\n" for line in asked)
    got = list(answers(run_shell([shell("bash"), "--norc", "--noprofile"], body, tmp_path)))
    assert got == [
        ["totals"],
        FORMATS,
        ["json", "jsonl"],
        [f"same-days-last-{p}" for p in ("month", "quarter", "week", "year")],
        [f"last-{p}" for p in ("month", "quarter", "week", "year")],
        sorted(["--help", "--version", "--verbose", *SUBCOMMANDS]),
        [],  # ids: nothing to offer, and not the directory's files either
        ["key.txt"],
        ["demo", "docs-example"],
    ]


@pytest.mark.slow
def test_zsh_completes_commands_and_choices_with_descriptions(
    cli_plain: Callable[..., Run], tmp_path: Path
) -> None:
    script = completion_script(cli_plain, "zsh", tmp_path)
    body = rf"""
autoload -Uz compinit && compinit -u -D
source {script}
[[ $_comps[closefunnel] == _python_argcomplete ]] || {{ print -u2 "not registered"; exit 1 }}
_describe() {{ print -rl -- "${{(@P)2}}" }}   # the display: print what it is given
ask() {{
    BUFFER=$1; CURSOR=${{#BUFFER}}; words=(${{(z)BUFFER}}); [[ $BUFFER == *' ' ]] && words+=('')
    CURRENT=${{#words}}
    $_comps[closefunnel]
    print -- '=='
}}
ask 'closefunnel tot'
ask 'closefunnel totals --format '
ask 'closefunnel totals --type c'
"""
    got = list(answers(run_shell([shell("zsh"), "-f"], body, tmp_path)))
    assert got == [
        ["totals:one report, or one report against compared ranges"],
        [f"{f}:{FORMAT_HELP}" for f in FORMATS],
        ["created-cohort:report type (default: active-stage-cohort)"],
    ]


@pytest.mark.slow
def test_fish_completes_commands_and_choices_with_descriptions(
    cli_plain: Callable[..., Run], tmp_path: Path
) -> None:
    script = completion_script(cli_plain, "fish", tmp_path)
    body = f"""
source {script}
for line in 'closefunnel tot' 'closefunnel totals --format ' 'closefunnel totals --range this-'
    complete -C "$line"
    echo ==
end
"""
    got = list(answers(run_shell([shell("fish"), "--no-config"], body, tmp_path)))
    assert got == [
        ["totals\tone report, or one report against compared ranges"],
        [f"{f}\t{FORMAT_HELP}" for f in FORMATS],
        [f"this-{p}\trelative range" for p in ("month", "quarter", "week", "year")],
    ]
