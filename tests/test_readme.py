"""Every example of README.md runs as written: its ```python blocks, its TOML methods file
and its ``annealbench ...`` shell commands, in the order a reader meets them, in one
scratch folder (so a later example finds the files an earlier one wrote).

Shell commands run in this process (``typer.testing.CliRunner``) with short settings put
in where the README's prose says the real ones take minutes or hours: one epoch on the
first 256 training images, one trial, one method, one worker (:func:`shortened`). Commands that need
what a test machine lacks (a Ray cluster and S3, network for MNIST, the Makefile's
installation) are listed in :data:`NOT_RUN` with the reason, and a README command the test
does not know fails :func:`test_every_readme_command_is_run_or_excused`.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from annealbench import methods
from annealbench.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELLS = ("sh", "bash")

#: README commands not run, with the reason.
NOT_RUN = {
    "make test": "it is this test suite",
    "annealbench run --preset paper-cifar10 --executor ray": "needs a Ray cluster and S3",
    "bash benchmarks/fidelity/run.sh": "40 runs of 100 epochs, hours here (docs/fidelity.md)",
    "tensorboard --logdir": "a server that runs until stopped (the test reads the events)",
    "mlflow ui": "a server that runs until stopped (the test reads the database)",
}
#: ``make run`` (Makefile, `run:`) is this command, then the README's report command
#: (`annealbench report --store out/quick/results.sqlite --out out/quick/report`), which
#: runs where the README shows it.
MAKE_RUN = ["annealbench run --preset quick --store out/quick/results.sqlite"]
#: Short values of options whose README value would take minutes (option -> value).
SHORT = {"--epochs": "1", "--trials": "1", "--workers": "1", "--steps": "2", "--repeats": "1"}
#: Per command, short values that replace SHORT's (lr-find needs 10 steps or more).
SHORT_FOR = {"lr-find": {"--steps": "10", "--subset": "512"}}
#: Option lists cut to their first item (option -> how many items kept).
FIRST = {"--methods": 1}
#: Options added to a command (command -> options) when it does not give them.
ADDED = {
    "train": {"--subset": "256", "--device": "cpu"},
    "run": {"--subset": "256", "--trials": "1", "--epochs": "1", "--workers": "1",
            "--no-progress": None, "--device": "cpu"},
    "bench": {"--batched-k": "2", "--device": "cpu"},
}  # fmt: skip
#: Per preset: a smaller grid (quick holds 48 runs, the paper's presets 480 of 4 models).
PRESET_GRID = {
    "quick": {"--methods": "sig+,adam"},
    "modern-quick": {"--methods": "wsd,sf-sgd", "--budgets": "100"},
    "paper-fashion-mnist": {"--models": "nn2", "--methods": "sig+,adam"},
}


def fenced(readme: str = "") -> list[tuple[str, str]]:
    """Every fenced block of the README as (language, text), in order."""
    return [(m[1], m[2]) for m in FENCE.finditer(readme or README.read_text())]


def commands(block: str) -> list[str]:
    """A shell block's commands: continuation lines joined, comments dropped."""
    joined = block.replace("\\\n", " ")
    lines = (" ".join(shlex.split(line, comments=True)) for line in joined.splitlines())
    return [line for line in lines if line]


def excused(command: str) -> str | None:
    return next((why for start, why in NOT_RUN.items() if command.startswith(start)), None)


def shortened(command: str) -> list[str]:
    """``annealbench ARGS`` as the arguments to run: README values made short (SHORT),
    short options added (ADDED, PRESET_GRID); MNIST is left out of a dataset list (no
    network here: only Fashion-MNIST is installed, from its Debian package)."""
    args = shlex.split(command)[1:]
    short = {**SHORT, **SHORT_FOR.get(args[0], {})}
    for i, arg in enumerate(args[:-1]):
        if arg in short:
            args[i + 1] = short[arg]
        if arg in FIRST:
            args[i + 1] = ",".join(args[i + 1].split(",")[: FIRST[arg]])
        if arg == "--datasets":
            args[i + 1] = ",".join(d for d in args[i + 1].split(",") if d != "mnist")
    added = dict(ADDED.get(args[0], {}))
    if "--preset" in args:
        added.update(PRESET_GRID.get(args[args.index("--preset") + 1], {}))
    for option, value in added.items():
        if option not in args:
            args += [option] if value is None else [option, value]
    return args


def run_command(command: str) -> None:
    """Run one README command (``make run`` as its two commands); fail with its output."""
    for line in MAKE_RUN if command == "make run" else [command]:
        args = shortened(line)
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, f"README: {line}\nran: {args}\n{result.output}"


def run_python(index: int, code: str) -> None:
    """Run a ```python block; a RunConfig's 100 epochs become 1 epoch on 256 images, the
    PyTorch loop's 100 epochs 10."""
    code = re.sub(r"\bepochs=100\b", "epochs=1, subset=256", code)
    code = re.sub(r"^epochs = 100$", "epochs = 10", code, flags=re.MULTILINE)
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "__readme__"})


def test_every_readme_command_is_run_or_excused() -> None:
    for language, block in fenced():
        if language in SHELLS:
            for command in commands(block):
                known = command == "make run" or command.startswith("annealbench ")
                assert known or excused(command), f"README command the test cannot run: {command}"


def test_every_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's examples, top to bottom, in one scratch folder (on ``sys.path``, as the
    console script puts its working folder, so ``mynets:build`` imports)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("ANNEALBENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(methods, "_USER", dict(methods._USER))  # the TOML's methods: ours only
    ran = {"python": 0, "shell": 0, "toml": 0}
    for index, (language, block) in enumerate(fenced()):
        if language == "python":
            run_python(index, block)
            ran["python"] += 1
        elif language == "toml" and block.startswith("# study.toml"):  # a study file
            Path("study.toml").write_text(block)
        elif language == "toml":  # the methods file of `--methods-file`, used by `train`
            Path("methods.toml").write_text(block)
            for name in re.findall(r"^\[methods\.(.+)\]$", block, re.MULTILINE):
                run_command(
                    f"annealbench train --dataset fashion-mnist --model nn2 --method {name} "
                    "--epochs 1 --methods-file methods.toml"
                )
            ran["toml"] += 1
        elif language in SHELLS:
            for command in commands(block):
                if not excused(command):
                    run_command(command)
                    ran["shell"] += 1
    assert ran["python"] >= 7 and ran["shell"] >= 12 and ran["toml"] == 1, ran
    assert Path("out/quick/report/report.html").is_file()  # make run's report
    assert Path("fmnist-tables/runs.parquet").is_file()  # the export command's tables
    assert Path("ckpt.pt").is_file()  # the PyTorch loop's scheduler state


def test_the_pytorch_loop_example_is_self_contained() -> None:
    """The loop example defines its data (no `batches()` left for the reader to write)."""
    language, loop = next(example for example in fenced() if "AnnealingLR(" in example[1])
    assert language == "python" and "batches()" not in loop and "DataLoader(" in loop
