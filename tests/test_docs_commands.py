"""Every ``tlplan`` command line the README and the docs show parses, and the affordable ones run as shown.

The commands are collected from the fenced code blocks of README.md, docs/*.md and docs/methods/*.md
(`sh`/`bash` lines, `run:` steps of a `yaml` workflow, `$ tlplan ...` lines of a plain block), so a
new example is tested without touching this file. Each one is parsed by the click command behind
the typer app: an option that does not exist or a value of the wrong type fails, naming the file
and the line. Then each one not listed in SLOW is run in-process, the commands of one file in
document order in one folder (so `solve -o plan.yaml` feeds the `train plan.yaml` and
`check plan.yaml` after it), with what the docs assume there: `./images` and `shapes` image folders,
`backbone.pt` (the state_dict of the model the command trains), the `[tool.tlplan]` settings
docs/ci.md shows, and for the docs that calibrate `my-board`, a stand-in for that profile. The exit
code expected is 0 unless the doc's own block shows another (`exit 1` under the command). No output
is compared: it must be there, and so must the file a command writes (`-o`, `--plot`, `run.json`).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "docs" / "methods").glob("*.md")))

#: at least this many commands are collected (27 when written): a collector that silently finds none fails
MIN_COMMANDS = 27

#: commands too slow for the suite (whole suite: under 10 minutes on 2 slow cores; this file: about a
#: minute): parsed, not run. Key: the command as the doc shows it (comment stripped). Value: what it
#: costs, timed here once in-process (2-core AMD EPYC, quiet machine; "busy": with another test run
#: beside it), and the test that covers what it does at a smaller size.
SLOW: dict[str, str] = {
    "tlplan calibrate --accelerator cuda --name my-board --budget-minutes 20":
        "needs a CUDA GPU, and runs for its --budget-minutes (not timed); without a GPU it is a one-line error, "
        "exit 2 (tests/test_accelerator.py::test_cli_cuda_without_cuda_is_one_line_and_exit_2); "
        "tests/test_accelerator.py::test_calibrate_on_a_gpu_records_it calibrates on a fake GPU",
    "tlplan calibrate --name my-board --budget-minutes 20":
        "runs for its --budget-minutes: 20 min (not timed); tests/test_calibrate.py::test_calibrate_cli "
        "calibrates with a tiny budget",
    "tlplan calibrate --name my-board --budget-minutes 25":
        "runs for its --budget-minutes: 25 min (not timed); tests/test_calibrate.py::test_calibrate_cli",
    "tlplan calibrate --evaluate my-board":
        "re-measures every zoo network's steps: about 25 min (docs/devices.md; not timed); "
        "tests/test_calibrate.py::test_calibrate_cli evaluates a small profile",
    "tlplan calibrate --name my-board --add --budget-minutes 10":
        "runs for its --budget-minutes: 10 min (not timed); tests/test_runtime_ops.py::test_calibrate_add_cli",
    "tlplan calibrate --name my-board --add --ops relu6.mask":
        "over 120 s (stopped at 120 s; its default budget is 20 min); "
        "tests/test_runtime_ops.py::test_calibrate_add_cli",
    "tlplan profile resnet50 --device my-board":
        "times every layer of resnet50 at 224x224: 57 s (114 s busy); tests/test_cli.py::test_profile_json_measured "
        "measures, the --device tests of tests/test_cli.py predict",
    "tlplan profile mobilenet_v2 --batch 8 --resolution 128 --scheme mobiletl:5 --device host-x86-2c":
        "times every layer: 16.3 s (25.0 s busy); tests/test_cli.py::test_profile_json_measured",
    "tlplan compare mobilenet_v2 --batch 8 --resolution 128 --device host-x86-2c --format markdown":
        "times a step of five schemes: 35.4 s (146.6 s busy); tests/test_device_planning.py::test_compare_device",
    "tlplan solve mobilenet_v2 --ram 64MB --batch 8 --resolution 128 --pareto --plot frontier.png":
        "solves a sweep of budgets: 28.3 s (31.1 s busy); tests/test_solve.py::test_cli_pareto (mcunet-5fps)",
    "tlplan importance mcunet-5fps --data ./images --weights backbone.pt --method contribution --steps 20 "
    "-o importance.csv":
        "a short fine-tune per option: over 300 s (stopped at 300 s); "
        "tests/test_device_planning.py::test_cli_importance_contribution",
    "tlplan solve mobilenet_v2 --ram 64MB --batch 8 --resolution 128 --device jetson-nano --max-step-ms 90":
        "13.8 s (16.3 s busy), over this file's share of the suite; "
        "tests/test_device_planning.py::test_cli_solve_device solves with --max-step-ms",
}

#: a documented exit code the collector cannot read off the block (it reads `exit N` under a `$ tlplan` line)
EXIT_CODES: dict[str, int] = {}

PLACEHOLDER = re.compile(r"\b(MODEL|PLAN|NAME|DIR|FILE|SIZE|MS|N)\b|^\[|\.\.\.|…")


@dataclass(frozen=True)
class DocCommand:
    file: str  # relative to the repository root
    line: int  # 1-based
    text: str  # the command as shown: no `$ `, no `run: `, no comment
    args: tuple[str, ...]  # after `tlplan`
    exit_code: int = 0  # what the doc says it exits with

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _command_of(line: str, lang: str) -> str | None:
    """The tlplan command on a line of a fenced block of language ``lang``, or None."""
    text = line.strip()
    if lang == "yaml":
        match = re.match(r"^(?:-\s+)?run:\s*(.*)$", text)
        if not match:
            return None
        text = match.group(1)
    elif lang in ("sh", "bash", "shell", "console"):
        text = text.removeprefix("$ ")
    elif lang in ("", "text"):
        if not text.startswith("$ tlplan"):
            return None
        text = text.removeprefix("$ ")
    else:
        return None
    if not (text == "tlplan" or text.startswith("tlplan ")):
        return None
    return text


def collect() -> list[DocCommand]:
    """Every runnable tlplan command line in the docs' fenced code blocks, in document order."""
    found: list[DocCommand] = []
    for path in DOC_FILES:
        rel = path.relative_to(ROOT).as_posix()
        lines = path.read_text(encoding="utf-8").splitlines()
        lang: str | None = None  # None: outside a block
        pending: int | None = None  # index into found of the last `$ tlplan` line of a plain block
        for number, raw in enumerate(lines, 1):
            stripped = raw.strip()
            if stripped.startswith("```"):
                lang = stripped[3:].strip().lower() if lang is None else None
                pending = None
                continue
            if lang is None:
                continue
            exit_line = re.fullmatch(r"exit (\d+)", stripped)
            if exit_line and pending is not None:  # the doc shows the exit code under the command
                found[pending] = replace(found[pending], exit_code=int(exit_line.group(1)))
                continue
            if stripped.startswith("$ "):
                pending = None
            text = _command_of(raw, lang)
            if text is None:
                continue
            args = shlex.split(text, comments=True)
            shown = shlex.join(args)  # the command without its comment, normalised
            if any(PLACEHOLDER.search(a) for a in args[1:]):
                continue  # a synopsis (`tlplan profile MODEL [--resolution N] ...`), not an example
            found.append(DocCommand(rel, number, shown, tuple(args[1:]), EXIT_CODES.get(shown, 0)))
            if lang in ("", "text"):
                pending = len(found) - 1
    return found


COMMANDS = collect()


def _ids(commands: list[DocCommand]) -> list[str]:
    return [c.where for c in commands]


def test_collector_finds_the_docs_commands() -> None:
    assert len(COMMANDS) >= MIN_COMMANDS, [c.where for c in COMMANDS]
    files = {c.file for c in COMMANDS}
    for must in ("docs/guide.md", "docs/solve.md", "docs/train.md", "docs/ci.md", "docs/devices.md"):
        assert must in files, f"no tlplan command collected from {must}"
    assert any(c.exit_code == 1 for c in COMMANDS), "docs/guide.md shows a check that exits 1"


def test_slow_list_names_only_documented_commands() -> None:
    shown = {c.text for c in COMMANDS}
    stale = [text for text in SLOW if text not in shown]
    assert not stale, f"SLOW lists commands no doc shows any more: {stale}"


# ------------------------------------------------------------------------------------------------
# parse: every command, by the click command behind the typer app


@pytest.mark.parametrize("command", COMMANDS, ids=_ids(COMMANDS))
def test_doc_command_parses(command: DocCommand) -> None:
    import typer.main

    from tlplan.cli import app

    group = typer.main.get_command(app)
    try:
        ctx = group.make_context("tlplan", list(command.args))
        rest = [*getattr(ctx, "_protected_args", getattr(ctx, "protected_args", [])), *ctx.args]
        name, sub, rest = group.resolve_command(ctx, rest)
        assert sub is not None, f"no subcommand in {command.text!r}"
        sub.make_context(name, list(rest), parent=ctx)
    except Exception as exc:  # click's UsageError / BadParameter (typer's own copy of click)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        pytest.fail(f"{command.where}: `{command.text}` does not parse: {message}", pytrace=False)


# ------------------------------------------------------------------------------------------------
# run: the commands whose cost fits a test suite, one folder per doc file, in document order


def _images(root: Path, per_class: int = 10, size: int = 32) -> None:
    """A two-class image folder (small PNGs of circles and squares), as the training tests make."""
    from test_train import shapes_folder

    shapes_folder(root, per_class=per_class, size=size)


def _ci_settings() -> str:
    """docs/ci.md's own `[tool.tlplan]` block: its workflow runs in a project with these settings."""
    text = (ROOT / "docs" / "ci.md").read_text(encoding="utf-8")
    block = re.search(r"```toml\n(.*?)```", text, flags=re.S)
    assert block, "docs/ci.md shows its pyproject.toml settings"
    return block.group(1)


def _my_board(data_home: Path) -> None:
    """What `tlplan calibrate --name my-board` leaves in the user's data folder (a stand-in: the shipped
    measured profile of this kind of machine, renamed), for the docs' `--device my-board`."""
    from tlplan.predict.devices import shipped_profiles_dir

    target = data_home / "tlplan" / "profiles" / "my-board"
    shutil.copytree(shipped_profiles_dir() / "host-x86-2c", target)
    device = json.loads((target / "device.json").read_text(encoding="utf-8"))
    device["name"] = "my-board"
    (target / "device.json").write_text(json.dumps(device, indent=1), encoding="utf-8")


@dataclass
class Workspace:
    folder: Path
    data_home: Path  # the user's data folder (profiles) for this doc's commands
    done: dict[str, int] = field(default_factory=dict)  # where -> exit code, of the commands run here


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory) -> dict[str, Workspace]:
    return {}


def _workspace(workspaces: dict[str, Workspace], tmp_path_factory, file: str) -> Workspace:
    if file not in workspaces:
        base = tmp_path_factory.mktemp(re.sub(r"\W", "_", file))
        folder, data_home = base / "project", base / "data"
        folder.mkdir()
        data_home.mkdir()
        _images(folder / "images")
        _images(folder / "shapes")
        if file == "docs/ci.md":  # its commands name no model: the project's settings do
            (folder / "pyproject.toml").write_text(_ci_settings(), encoding="utf-8")
        if any("my-board" in c.args for c in COMMANDS if c.file == file):
            _my_board(data_home)
        workspaces[file] = Workspace(folder, data_home)
    return workspaces[file]


def _weights_for(command: DocCommand, folder: Path) -> None:
    """`backbone.pt` for a command given `--weights backbone.pt`: the state_dict of the model it names
    (or the model of the plan it runs)."""
    args = list(command.args)
    if "--weights" not in args:
        return
    path = folder / args[args.index("--weights") + 1]
    if path.exists():
        return
    import torch
    import yaml

    import tlplan

    target = args[1]
    if target.endswith((".yaml", ".yml")):
        target = yaml.safe_load((folder / target).read_text(encoding="utf-8"))["model"]
    torch.save(tlplan.load_model(target).state_dict(), path)


def _written(args: tuple[str, ...]) -> list[str]:
    """The files a command says it writes (a train run's record in its run folder)."""
    names = []
    for flag in ("-o", "--output", "--plot"):
        if flag in args:
            names.append(args[args.index(flag) + 1])
    for flag in ("--run-dir", "--out"):
        if args[0] == "train" and flag in args:
            names.append(str(Path(args[args.index(flag) + 1]) / "run.json"))
    return names


def _runs() -> list[DocCommand]:
    """The commands run: not SLOW, and once per doc (docs/ci.md's workflow solves again after a failed
    check: the same command, in the same folder, already run)."""
    runs: list[DocCommand] = []
    for command in COMMANDS:
        if command.text not in SLOW and (command.file, command.text) not in {(c.file, c.text) for c in runs}:
            runs.append(command)
    return runs


RUN = _runs()


@pytest.mark.parametrize("command", RUN, ids=_ids(RUN))
def test_doc_command_runs(command: DocCommand, workspaces, tmp_path_factory, monkeypatch, run) -> None:
    ws = _workspace(workspaces, tmp_path_factory, command.file)
    monkeypatch.chdir(ws.folder)
    monkeypatch.setenv("XDG_DATA_HOME", str(ws.data_home))
    for var in ("TLPLAN_PROFILES", "GITHUB_STEP_SUMMARY"):  # the shipped and user profiles; no job summary
        monkeypatch.delenv(var, raising=False)
    # the commands shown before it in the same doc, as a reader would have run them (once each)
    for before in RUN:
        if before.file == command.file and before.line < command.line and before.where not in ws.done:
            _weights_for(before, ws.folder)
            ws.done[before.where] = run(*before.args)[0]
    _weights_for(command, ws.folder)
    code, out, err = run(*command.args)
    ws.done[command.where] = code
    assert code == command.exit_code, (
        f"{command.where}: `{command.text}` exited {code}, the doc shows {command.exit_code}\n{err[-2000:]}")
    assert out.strip() or err.strip(), f"{command.where}: `{command.text}` printed nothing"
    if code == 0:
        for name in _written(command.args):
            assert (ws.folder / name).exists(), f"{command.where}: `{command.text}` did not write {name}"
