"""D50 at the best learning rate of one warm-up in study A against one in study B, with the same
simultaneous interval as `elrbench report`'s verdict (elrbench.stats.best_depth50_difference), for
two studies of one design that differ in what the report cannot compare within a study (e.g. the
normalization: a workload each).

    python studies/science/best_lr_difference.py STUDY_A WARMUP_A STUDY_B WARMUP_B
"""
from __future__ import annotations

import sys

from elrbench import stats
from elrbench.store import StudyStore


def fits(folder: str, warmup: str) -> list[stats.Depth50]:
    """One D50 fit per learning rate of the warm-up's finished trials (as the report fits them)."""
    rows = [r for r in StudyStore.open(folder).results() if r.warmup == warmup and r.outcome != "failed"]
    if not rows:
        sys.exit(f"{folder}: no finished trial with warm-up {warmup!r}")
    rng = stats.span(sorted({r.depth for r in rows}))
    out = []
    for lr in sorted({r.lr for r in rows}):
        mine = [r for r in rows if r.lr == lr]
        out.append(stats.depth50([r.depth for r in mine], [r.outcome == "trained" for r in mine],
                                 len({r.seed for r in mine}), rng, lr=lr))
    return out


def main(argv: list[str]) -> None:
    if len(argv) != 4:
        sys.exit(__doc__)
    a, b = fits(argv[0], argv[1]), fits(argv[2], argv[3])
    ba, bb = stats.best_depth50(a), stats.best_depth50(b)
    d = stats.best_depth50_difference(a, b)
    print(f"A ({argv[1]}) at its best lr {ba.lr:g}: {ba.text()}; B ({argv[3]}) at its best lr {bb.lr:g}: "
          f"{bb.text()}; A - B: {d.text('.1f', signed=True)} (95%, {d.n} seeds)")


if __name__ == "__main__":
    main(sys.argv[1:])
