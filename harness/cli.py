"""The ``harness`` command line: a thin layer over the library.

Each command lives in its own module under ``harness.commands`` and is registered in
:data:`COMMANDS` with its one-line help; its module is imported only when the command runs
(:mod:`harness.commands.lazy`), so ``harness --help`` imports no torch, matplotlib or h5py.
Add a command with one line: ``"name": LazyCommand("harness.commands.name:function", "help")``.
"""

from __future__ import annotations

import typer

import harness
from harness.commands.lazy import LazyCommand, LazyGroup

#: name -> (module:function or module:typer_app, one-line help shown by ``harness --help``).
COMMANDS: dict[str, LazyCommand] = {
    "program": LazyCommand("harness.commands.program:program_command",
                           "Program a model's weights onto a chip with closed-loop write-read-verify."),
    "session": LazyCommand("harness.commands.session:app",
                           "Timed readout sessions: program, then read back on a schedule; resume; status."),
    "replay": LazyCommand("harness.commands.replay:replay_command",
                          "Per target level: mean G(t)/G(t0), spread, and the fitted drift exponent vs time."),
    "emulate": LazyCommand("harness.commands.emulate:emulate_command",
                           "Serve a virtual chip over a pty or loopback TCP, speaking the serial/VISA wire protocol."),
    "evaluate": LazyCommand("harness.commands.evaluate:evaluate_command",
                            "Accuracy of a model vs time since programming, from a live chip or a recording."),
    "sweep": LazyCommand("harness.commands.sweep:sweep_command",
                         "Monte Carlo grid of simulated chips (models × chips × times × bits) on Dask; resumes."),
    "report": LazyCommand("harness.commands.report:report_command",
                          "Write one HTML report of the inputs: plots embedded, provenance at the bottom."),
    "models": LazyCommand("harness.commands.models:models_command",
                          "List the model zoo: parameters, MACs, MVMs per inference, and how each fits the array."),
    "train": LazyCommand("harness.commands.train:train_command",
                         "Train MODEL on DATA with RECIPE; checkpoints go to OUT.ckpt.h5 (removed on success)."),
    "data": LazyCommand("harness.commands.data:app",
                        "Build dataset files (KWS MFCCs, VWW images, UCI HAR) from local copies of public datasets."),
    "accel": LazyCommand("harness.commands.accel:accel_command",
                         "Tile a model on the AON-CiM array (layer-serial) and report latency, energy, TOPS, TOPS/W."),
    "calibrate": LazyCommand("harness.commands.calibrate:calibrate_command",
                             "Fit σ_prog(x), the drift-exponent laws, the read-noise law and the RESET level, with CIs and KS."),
    "compare": LazyCommand("harness.commands.compare:compare_command",
                           "Drift, read noise and write-verify convergence per target level, A vs B; KS per readout time."),
    "finetune": LazyCommand("harness.commands.finetune:finetune_command",
                            "Program MODEL onto CHIP layer by layer, fine-tuning the rest on the measured weights; write OUT."),
}


class HarnessGroup(LazyGroup):
    lazy_commands = COMMANDS


app = typer.Typer(
    name="harness",
    help="PCM chip test harness: program, drift, read back and evaluate analog PCM chips.",
    cls=HarnessGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"harness {harness.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """PCM chip test harness."""
