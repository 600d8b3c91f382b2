import sys
from elrbench import stats
from elrbench.store import StudyStore
def fits(folder, warmup):
    rows = [r for r in StudyStore.open(folder).results() if r.warmup == warmup and r.outcome != "failed"]
    rng = stats.span(sorted({r.depth for r in rows}))
    out = []
    for lr in sorted({r.lr for r in rows}):
        mine = [r for r in rows if r.lr == lr]
        out.append(stats.depth50([r.depth for r in mine], [r.outcome == "trained" for r in mine],
                                 len({r.seed for r in mine}), rng, lr=lr))
    return out
a, b = fits(sys.argv[1], sys.argv[2]), fits(sys.argv[3], sys.argv[4])
d = stats.best_depth50_difference(a, b)
print(f"A best: {stats.best_depth50(a).text()} at lr {stats.best_depth50(a).lr:g}; B best: {stats.best_depth50(b).text()} at lr {stats.best_depth50(b).lr:g}; A - B: {d.text('.1f', signed=True)}")
