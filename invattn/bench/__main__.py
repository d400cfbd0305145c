"""``python -m invattn.bench NAME``: run one benchmark, or ``all``."""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "inverse": "invattn.bench.inverse",
    "logdet": "invattn.bench.logdet",
    "attention": "invattn.bench.attention",
    "train": "invattn.bench.train",
    "certify": "invattn.bench.certify",
    "classifiers": "invattn.bench.classifiers",
    "demos": "invattn.bench.demos",
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m invattn.bench", description=__doc__)
    parser.add_argument("name", choices=[*BENCHMARKS, "all"])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    for name in names:
        print(f"== benchmark: {name} ==", flush=True)
        importlib.import_module(BENCHMARKS[name]).run(quick=args.quick)


if __name__ == "__main__":
    main()
