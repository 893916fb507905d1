"""What the assistant is worth: simulated humans alone, with a behaviour-cloning baseline, and with the
goal-predicting assistant at several confidence thresholds, on goals it never trained on.

Not a test. Run:  .venv/bin/python benchmarks/assist.py [--episodes 300] [--steps 600] [--eval 50]

Trains in a fresh temporary home: simulated humans play `--episodes` goals (seeds 1000...) alone, the
episodes are shared and train an assistant as a repro job (`bitswarm assist train`), then both
policies play `--eval` other goals (seeds 0...) beside the same simulated humans.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=300)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--eval", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from bitswarm.assist.simulate import simulate
    from bitswarm.assist.training import train_assistant
    from bitswarm.home import Home
    from bitswarm.store import BlobStore

    home = Home(Path(tempfile.mkdtemp(prefix="bitswarm-assist-bench-")))
    store = BlobStore(home.store)
    t = time.perf_counter()
    shared = simulate(args.episodes, home=home, store=store, seed=1000, share=True)["shared"]
    t_sim = time.perf_counter() - t
    t = time.perf_counter()
    res = train_assistant(store, home, shared, steps=args.steps, threads=args.threads)
    t_train = time.perf_counter() - t
    print(f"{args.episodes} episodes simulated in {t_sim:.1f} s; {res['examples']} cell examples; "
          f"{args.steps} steps trained in {t_train:.1f} s; model {res['model']}")
    rows = []
    arms = [("alone", None, {}), ("imitation (bc)", res["model"], {"imitate": True})]
    arms += [(f"assistant c={c}", res["model"], {"confidence": c}) for c in (0.6, 0.7, 0.8, 0.9)]
    for name, model, kw in arms:
        r = simulate(args.eval, model=model, home=home, store=store, seed=0, alone=model is None, **kw)
        rows.append({"arm": name, **{k: r.get(k) for k in (
            "human_actions_alone", "human_actions_with_assistant", "assistant_share_of_goal_blocks",
            "assistant_wrong_blocks", "goal_completion_rate")}})
    print(f"{'arm':<20} {'human actions':>14} {'share of goal':>14} {'wrong/episode':>14} {'completed':>10}")
    for r in rows:
        acts = r["human_actions_with_assistant"] or r["human_actions_alone"]
        print(f"{r['arm']:<20} {acts:>14} {r['assistant_share_of_goal_blocks'] or 0:>14} "
              f"{r['assistant_wrong_blocks'] or 0:>14} {r['goal_completion_rate']:>10}")
    print(json.dumps({"train": {k: v for k, v in res.items() if k != "episodes"}, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
