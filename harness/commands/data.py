"""``harness data``: turn local copies of public datasets into harness dataset files.

Each subcommand reads a local directory in the dataset's standard layout (nothing is
downloaded), computes the features once and writes one dataset file (``docs/data.md``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import typer

from harness.commands.common import check_output, console_for, emit_json, progress_bar, user_errors

app = typer.Typer(
    help="Build dataset files (KWS MFCCs, VWW images, UCI HAR) from local copies of public datasets.",
    no_args_is_help=True,
)


class _LazyProgress(contextlib.ExitStack):
    """A progress bar that appears at the first update, so that input errors found before
    any work starts are the only line on stderr."""

    def __init__(self, description: str, unit: str = "") -> None:
        super().__init__()
        self._description = description
        self._unit = unit
        self._update: Callable[..., None] | None = None

    def __call__(self, done: int, total: int) -> None:
        if self._update is None:
            self._update = self.enter_context(progress_bar(self._description, total=total, unit=self._unit))
        self._update(done, total=total)


def _report(kind: str, out: Path, counts: dict[str, int], json_out: bool) -> None:
    if json_out:
        emit_json({"dataset": kind, "out": str(out), "clips" if kind == "kws" else "samples": counts})
        return
    parts = ", ".join(f"{n} {split}" for split, n in counts.items())
    console_for(json_out).print(f"wrote {out}: {parts}")


@app.command("kws")
def kws_command(
    speech_commands: Path = typer.Option(..., "--speech-commands", help="Local Google Speech Commands v2 directory (standard layout)."),
    out: Path = typer.Option(..., "--out", help="Dataset file to write (HDF5)."),
    unknown_fraction: float = typer.Option(0.1, "--unknown-fraction", help="_unknown_ clips per split, as a fraction of its keyword clips."),
    silence_fraction: float = typer.Option(0.1, "--silence-fraction", help="_silence_ clips per split, as a fraction of its keyword clips."),
    seed: int = typer.Option(0, "--seed", help="Seed of the unknown-word draw and the silence windows."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
    json_out: bool = typer.Option(False, "--json", help="Print only one JSON object on stdout."),
) -> None:
    """12-class keyword spotting: 49x10 MFCCs (MicroNets front end) of Speech Commands v2. Needs the audio extra."""
    with user_errors():
        check_output(out, option="--out", suffixes=(".h5", ".hdf5"), overwrite=overwrite)
        from harness.data.speech_commands import build_speech_commands

        with _LazyProgress("MFCC features", unit="clips") as progress:
            counts = build_speech_commands(
                speech_commands,
                out,
                unknown_fraction=unknown_fraction,
                silence_fraction=silence_fraction,
                seed=seed,
                progress=progress,
            )
        _report("kws", out, counts, json_out)


@app.command("vww")
def vww_command(
    images: Path = typer.Option(..., "--images", help="Local VWW-style folder: person/ and non_person/ (optionally under train/ val/ test/)."),
    out: Path = typer.Option(..., "--out", help="Dataset file to write (HDF5)."),
    size: int = typer.Option(50, "--size", help="Side of the square grayscale image, pixels."),
    json_out: bool = typer.Option(False, "--json", help="Print only one JSON object on stdout."),
) -> None:
    """Person / non-person images as size x size grayscale (default 50x50). Needs the images extra."""
    with user_errors():
        from harness.data.vww import build_vww

        with _LazyProgress("images", unit="images") as progress:
            counts = build_vww(images, out, size=size, progress=progress)
        _report("vww", out, counts, json_out)


@app.command("har")
def har_command(
    uci_har: Path = typer.Option(..., "--uci-har", help="Local 'UCI HAR Dataset' directory (standard layout)."),
    out: Path = typer.Option(..., "--out", help="Dataset file to write (HDF5)."),
    kind: str = typer.Option("features", "--kind", help="features: the 561-feature vectors; windows: raw 9x128 inertial windows."),
    json_out: bool = typer.Option(False, "--json", help="Print only one JSON object on stdout."),
) -> None:
    """Human activity recognition (6 classes) from a local UCI HAR copy."""
    with user_errors():
        from harness.data.har import build_har

        counts = build_har(uci_har, out, kind=kind)
        _report("har", out, counts, json_out)
