"""The benchmark's speech models besides the matrix, trained ahead of `xlingual rank-eval` (which then reuses them by
their run keys): a phone recognizer on all the languages and the in-set LID started from it (with its PRLM
back-end), then for every target the recognizer and the LID trained without it (leave-one-out). Needs no matrix, so
it can run beside one.

    python recipes/synthetic/train_models.py --lid recipes/synthetic/benchmark_lid.yaml \
        --phones recipes/synthetic/benchmark_phones.yaml --set out_dir=exp/benchmark_lid \
        --phone-set out_dir=exp/benchmark_phones [--jobs 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from xlingual.config import LIDConfig, PhonotacticConfig, load_config
from xlingual.recipe import train_lid
from xlingual.predictors import train_loo_lids, train_loo_phone_recognizers


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lid", required=True, help="LIDConfig YAML (its languages are the benchmark's)")
    p.add_argument("--phones", required=True, help="PhonotacticConfig YAML")
    p.add_argument("--set", action="append", default=[], help="override for --lid")
    p.add_argument("--phone-set", action="append", default=[], help="override for --phones")
    p.add_argument("--jobs", type=int, default=1, help="leave-one-out models trained at once (a process each)")
    args = p.parse_args(argv)
    lid = load_config(LIDConfig, args.lid, args.set)
    phones = load_config(PhonotacticConfig, args.phones, args.phone_set)
    languages = list(lid.languages)
    t0 = time.time()
    in_set = train_lid(lid, phones)
    recognizers = train_loo_phone_recognizers(phones, languages, languages, args.jobs)
    loo = train_loo_lids(lid, languages, init_from=recognizers, jobs=args.jobs)
    print(json.dumps({"in_set_lid": str(in_set), "recognizers": {t: str(v) for t, v in recognizers.items()},
                      "loo_lids": {t: str(v) for t, v in loo.items()}, "seconds": round(time.time() - t0)},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
