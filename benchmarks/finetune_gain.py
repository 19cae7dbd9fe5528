"""Measurement: the accuracy gain of progressive chip-in-the-loop fine-tuning over time (issue 20).

For each virtual chip (seed): the model is programmed layer by layer twice on two fresh chips
of the same seed — once with fine-tuning between the layers (``--epochs E``), once without
(``--epochs 0``: the same layer-by-layer programming, nothing trained) — and each chip is read at
the same times after its last layer (each run's recording, as ``harness finetune --times``
writes it). Both recordings are evaluated (``harness evaluate --recording``: GDC, the model's
bits) on the whole test split; the paired difference fine-tuned − not is the paired two-way
bootstrap over chips and test examples (:func:`harness.evaluation.uncertainty.paired_difference`).
Pairs are the chip (same seed: the same devices) and the test example; the conductances differ
because the fine-tuned model programs other targets into the layers after the first.

    python benchmarks/finetune_gain.py --model fixtures/models/analognet-kws-analognets-4b.h5 \
        --chip virtual --seeds 0,1,2,3,4 --bits 4 --epochs 1 [--max-train N] --out runs/ft-kws

Per chip its results are kept in OUT (``s<seed>.npz`` and the models and recordings), so an
interrupted measurement continues with the chips not yet done; it prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from harness.chip.registry import open_chip, with_seed
from harness.data import load_dataset
from harness.evaluation.evaluate import evaluate_recording, resolve_model
from harness.evaluation.uncertainty import paired_difference
from harness.models.format import save_model
from harness.train.finetune import FinetuneOptions, progressive_finetune
from harness.train.finetune_record import naming_recording, record_finetune
from harness.units import format_duration, parse_durations


def run_chip(args: argparse.Namespace, seed: int, times_s: tuple[float, ...]) -> dict[str, np.ndarray]:
    out = Path(args.out)
    model = resolve_model(args.model)
    data = load_dataset(model.dataset)
    correct = {}
    for label, epochs in (("finetuned", args.epochs), ("none", 0)):
        uri = with_seed(args.chip, seed)
        chip = open_chip(uri)
        options = FinetuneOptions(epochs=epochs, lr=args.lr, seed=args.seed, bits=args.bits, max_train=args.max_train)
        t0 = time.perf_counter()

        def say(e: dict) -> None:  # type: ignore[type-arg]
            if e["phase"] == "epoch":
                print(f"  seed {seed} {label}: layer {e['index'] + 1}/{e['layers']} loss {e['loss']:.4f}", file=sys.stderr)

        result = progressive_finetune(chip, model, data, options, progress=say)
        path = out / f"{label}-s{seed}.h5"
        rec = out / f"{label}-s{seed}.reads.h5"
        record_finetune(rec, chip, result, chip_uri=uri, model_path=path, times_s=times_s, overwrite=True)
        tuned = naming_recording(result.model, rec)
        save_model(tuned, path)
        chip.close()
        ev = evaluate_recording(rec, tuned, times_s=times_s, bits=(result.model.metadata["bits"],), gdc=True)
        assert ev.correct is not None
        correct[label] = ev.correct[0, :, 0, :]  # (times, examples)
        print(f"seed {seed} {label}: {format_duration(time.perf_counter() - t0)}, accuracy "
              f"{np.round(correct[label].mean(axis=1) * 100, 2).tolist()}", file=sys.stderr)
    return correct


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="fixtures/models/analognet-kws-analognets-4b.h5")
    p.add_argument("--chip", default="virtual")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--bits", type=int, default=None)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-train", type=int, default=None)
    p.add_argument("--times", default="25s,1d,1mo,1y")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    times_s = parse_durations(args.times)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    per_chip = {}
    for seed in seeds:
        cache = out / f"s{seed}.npz"
        if not cache.exists():
            correct = run_chip(args, seed, times_s)
            np.savez(cache, **correct)
        per_chip[seed] = dict(np.load(cache))
    done = sorted(per_chip)
    table = {}
    labels = args.times.split(",")
    for j, label in enumerate(labels):
        a = np.stack([per_chip[s]["none"][j] for s in done])
        b = np.stack([per_chip[s]["finetuned"][j] for s in done])
        d, lo, hi = paired_difference(a, b)
        table[label] = {"none": float(a.mean()), "finetuned": float(b.mean()), "difference": d, "ci95": [lo, hi]}
    print(json.dumps({"model": args.model, "chips": [with_seed(args.chip, s) for s in done], "epochs": args.epochs,
                      "max_train": args.max_train, "bits": args.bits, "accuracy": table}, indent=1))


if __name__ == "__main__":
    main()
