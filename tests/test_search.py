"""The search over pruning ratio x precision x layers kept in float (the recipe's ``search:``).

Its Ray path, on a two-node cluster with no shared folder, is tests/test_search_ray.py.
"""

import json

from test_pipeline import BENCH, _recipe

from modelpress.run import run

SEARCH = (
    """\
name: search
data: {name: digits, calibration: 64}
models:
  cnn: {model: resnet8, width: 0.5, train: {epochs: 4}}
targets:
  onnxruntime: {precisions: [fp32], threads: 1}
search:
  max_drop: 1.0
  objective: bytes
  prune_ratios: [0.0, 0.5]
  precisions: [fp32, int8]
  keep_float: [0, 1]
  workers: 2
  recovery_epochs: 2
"""
    + BENCH
)


def test_search_front_and_choice_respect_the_budget(tmp_path):
    outcome = run(_recipe(tmp_path, SEARCH), out=tmp_path / "out", log=lambda s: None)
    search = json.loads((tmp_path / "out" / "search.json").read_text())
    trials = search["trials"]
    assert len(trials) == 2 * 3  # 2 ratios x (fp32, int8 keep 0, int8 keep 1)
    assert all(t["status"] == "ok" for t in trials), [t["reason"] for t in trials]
    front = search["front"]["cnn"]
    for i in front:  # nothing on the front is dominated
        for j, t in enumerate(trials):
            better = (
                t["accuracy_drop"] <= trials[i]["accuracy_drop"]
                and t["size_bytes"] <= trials[i]["size_bytes"]
            )
            strictly = (
                t["accuracy_drop"] < trials[i]["accuracy_drop"]
                or t["size_bytes"] < trials[i]["size_bytes"]
            )
            assert not (better and strictly), (i, j)
    chosen = search["chosen"]["cnn"]
    assert chosen in front and trials[chosen]["accuracy_drop"] <= 1.0
    within = [  # a trial slower than its fp32 counterpart is never chosen (test_slower_mark.py)
        t["size_bytes"]
        for t in trials
        if t["accuracy_drop"] <= 1.0 and "slower than fp32" not in t["marks"]
    ]
    assert trials[chosen]["size_bytes"] == min(within)
    assert any(t["kept_float"] for t in trials)  # keep_float 1 kept a named layer in float
    assert outcome.exit_code == 0
