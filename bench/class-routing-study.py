#!/usr/bin/env python3
"""Per-example routing at 8, 14 and 20 tasks: LDA on task labels (what `tswitch route --build --kind lda` fits) against
LDA on (task, class) labels whose best class names the task, on the same base features (layers 3-6, mean-pooled, each
at unit length, concatenated; max 48 tokens). Fitted on the first 1,000 train texts per task, measured on the test
splits; no fine-tune or head is used. Offline numpy (transformers for the features, cached in bench/out/routing-study).

Usage: OMP_NUM_THREADS=2 python3 bench/class-routing-study.py [--tasks 8,14,20] [--lam 0.01]
"""
import argparse, importlib.util, json, os, sys
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("routing_study", os.path.join(ROOT, "bench/routing-study.py"))
rs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rs)
TASK_ORDER = rs.TASK_ORDER


def features(texts, cache):
    return rs.layers_3_6(texts, cache)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="8,14,20")
    ap.add_argument("--lam", type=float, default=0.01)
    ap.add_argument("--per-task", type=int, default=1000)
    ap.add_argument("--cache", default=os.path.join(ROOT, "bench/out/routing-study"))
    args = ap.parse_args()
    os.makedirs(args.cache, exist_ok=True)
    train, test = {}, {}
    for t in TASK_ORDER:
        d = os.path.join(ROOT, "data/tasks", t)
        train[t] = rs.read_jsonl(os.path.join(d, "train.jsonl"))[:args.per_task]
        test[t] = rs.read_jsonl(os.path.join(d, "test.jsonl"))
    all_train = [r["text"] for t in TASK_ORDER for r in train[t]]
    all_test = [r["text"] for t in TASK_ORDER for r in test[t]]
    ftr, fte = features(all_train, args.cache), features(all_test, args.cache)
    offs_tr = np.cumsum([0] + [len(train[t]) for t in TASK_ORDER])
    offs_te = np.cumsum([0] + [len(test[t]) for t in TASK_ORDER])
    print("| tasks | task-label LDA: routed (mean over tasks) | class-label LDA: routed | class-label LDA: classes |")
    print("|---|---|---|---|")
    for n in map(int, args.tasks.split(",")):
        tasks = TASK_ORDER[:n]
        x = ftr[:offs_tr[n]]
        y_task = np.concatenate([np.full(len(train[t]), i) for i, t in enumerate(tasks)])
        cls, y_cls = {}, []
        for i, t in enumerate(tasks):
            for r in train[t]:
                y_cls.append(cls.setdefault((i, r["label"]), len(cls)))
        y_cls = np.array(y_cls)
        owner = np.array([k[0] for k in sorted(cls, key=cls.get)])
        xt = fte[:offs_te[n]]
        truth = np.concatenate([np.full(len(test[t]), i) for i, t in enumerate(tasks)])
        by_task = rs.LDA(x, y_task, args.lam).scores(xt).argmax(1)
        by_class = owner[rs.LDA(x, y_cls, args.lam).scores(xt).argmax(1)]
        per = lambda pred: np.mean([np.mean(pred[truth == i] == i) for i in range(n)])
        print(f"| {n} | {100 * per(by_task):.1f} % | {100 * per(by_class):.1f} % | {len(cls)} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
