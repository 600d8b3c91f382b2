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
from elrbench.tables import trainable_depths


def fits(folder: str, warmup: str) -> list[stats.Depth50]:
    """The warm-up's D50 fit at each learning rate, exactly as the study's report fits them."""
    rows = StudyStore.open(folder).results()
    found = [t for g in trainable_depths(rows, warmup) for t in g.rows if t.warmup == warmup]
    if len(found) != 1:
        sys.exit(f"{folder}: {'no' if not found else 'more than one group of'} finished trials with warm-up "
                 f"{warmup!r}")
    return list(found[0].by_lr.values())


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
