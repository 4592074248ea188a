import json
import sys
from xml.etree import ElementTree as ET

import pytest
from conftest import ENV, make_record, make_results

from modelpress.errors import ConfigError
from modelpress.measure.gate import (
    Policy,
    Regression,
    Rule,
    load_policy,
    main,
    parse_size,
    run_gates,
)
from modelpress.measure.results import Results, save_results

POLICY = """
rules:
  - name: int8 models
    match: {precision: "*int8"}
    min_accuracy: 0.9
    max_accuracy_drop: 1.0
    min_agreement: 0.98
    max_p90_ms: {1: 1.0, 32: 5.0}
    max_size: 100 KB
"""


@pytest.fixture
def files(tmp_path):
    def write(name: str, obj) -> str:
        path = tmp_path / name
        if isinstance(obj, Results):
            save_results(obj, path)
        else:
            path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
        return str(path)

    write.dir = tmp_path
    return write


def gate(files, results, policy=POLICY, baseline=None):
    argv = [files("results.json", results), "--policy", files("gates.yaml", policy)]
    if baseline is not None:
        argv += ["--baseline", files("baseline.json", baseline)]
    junit = str(files.dir / "gates.xml")
    code = main([*argv, "--junit", junit, "--quiet"])
    return code, junit


def test_gate_passes_and_writes_one_testcase_per_check(files):
    code, junit = gate(files, make_results(make_record(), make_record(precision="fp32")))
    assert code == 0
    suite = ET.parse(junit).getroot().find("testsuite")
    names = [c.get("name") for c in suite.iter("testcase")]
    # status + 3 accuracy checks + 2 latency ceilings + size, for the int8 record only
    assert names == [
        "status",
        "min_accuracy",
        "max_accuracy_drop",
        "min_agreement",
        "max_p90_ms@batch1",
        "max_p90_ms@batch32",
        "max_size",
    ]
    assert suite.get("failures") == "0" and suite.get("errors") == "0"


@pytest.mark.parametrize(
    "override, checks",
    [
        ({"accuracy": 0.85}, {"min_accuracy"}),
        ({"drop": 2.5}, {"max_accuracy_drop"}),
        ({"agreement": 0.9}, {"min_agreement"}),
        ({"speed": 30.0}, {"max_p90_ms@batch1", "max_p90_ms@batch32"}),
        ({"size": 250_000}, {"max_size"}),
    ],
)
def test_gate_fails_on_each_threshold(files, override, checks):
    code, junit = gate(files, make_results(make_record(**override)))
    assert code == 1
    failed = [c for c in ET.parse(junit).iter("testcase") if c.find("failure") is not None]
    assert {c.get("name") for c in failed} == checks
    assert failed[0].get("classname") == "gate.resnet8.onnxruntime.int8"
    assert "not" in failed[0].find("failure").get("message")


def test_failed_target_fails_with_its_reason_and_skipped_does_not(files):
    res = make_results(
        make_record(status="failed", reason="build: BuildError: op Foo has no int8 kernel"),
        make_record(precision="dynamic_int8", status="skipped", reason="no runtime here"),
    )
    code, junit = gate(files, res)
    assert code == 1
    cases = {c.get("classname"): c for c in ET.parse(junit).iter("testcase")}
    assert "no int8 kernel" in cases["gate.resnet8.onnxruntime.int8"].find("failure").get("message")
    assert cases["gate.resnet8.onnxruntime.dynamic_int8"].find("skipped") is not None
    strict = POLICY + "fail_on_skipped: true\n"
    code, _ = gate(
        files, make_results(make_record(precision="dynamic_int8", status="skipped")), strict
    )
    assert code == 1


def test_gate_errors_when_a_check_cannot_be_evaluated(files, capsys):
    code, junit = gate(files, make_results(make_record(validation=False)))
    assert code == 2
    errors = [
        c.get("name") for c in ET.parse(junit).iter("testcase") if c.find("error") is not None
    ]
    assert errors == ["min_accuracy", "max_accuracy_drop", "min_agreement"]
    # a rule whose match selects nothing is a usage error too (a typo must not pass silently)
    code, _ = gate(files, make_results(make_record(precision="fp32")))
    assert code == 2


def test_latency_regression_aa_passes_ab_fails(files):
    base = make_results(make_record(seed=0))
    policy = POLICY + "regression: {tolerance: 0.10, confidence: 0.95}\n"
    assert gate(files, make_results(make_record(seed=10)), policy, base)[0] == 0
    code, junit = gate(files, make_results(make_record(seed=20, speed=1.25)), policy, base)
    assert code == 1
    failed = {
        c.get("name"): c for c in ET.parse(junit).iter("testcase") if c.find("failure") is not None
    }
    assert set(failed) == {"regression_p50@batch1", "regression_p50@batch32"}
    assert "entirely above 1.100" in failed["regression_p50@batch1"].find("failure").get("message")
    # within the tolerance: slower, but not beyond 10 %: passes
    assert gate(files, make_results(make_record(seed=30, speed=1.04)), policy, base)[0] == 0


def test_regression_statistic_ignores_a_single_outlier_burst():
    base = make_results(make_record(seed=0))
    cur = make_record(seed=1)
    cur.latency[0].samples_us[100:130] = [1e5] * 30  # 30 calls preempted for 100 ms each
    report = run_gates(make_results(cur), Policy(regression=Regression()), base)
    assert report.exit_code == 0


@pytest.mark.parametrize(
    "baseline, words",
    [
        (make_results(make_record(model="gru", family="rnn")), "other models or targets"),
        (make_results(make_record(target="litert")), "other models or targets"),
        (
            make_results(make_record(), env=ENV.model_copy(update={"cpu_model": "Other CPU"})),
            "not comparable across machines",
        ),
    ],
)
def test_baseline_of_other_model_target_or_machine_is_a_usage_error(files, capsys, baseline, words):
    policy = "regression: {tolerance: 0.1}\n"
    code, _ = gate(files, make_results(make_record()), policy, baseline)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("modelpress: error:") and words in err[0]


def test_regression_without_baseline_and_thread_mismatch_are_errors(files):
    assert gate(files, make_results(make_record()), "regression: {}\n")[0] == 2
    base = make_results(make_record(threads=4))
    assert gate(files, make_results(make_record()), "regression: {}\n", base)[0] == 2


@pytest.mark.parametrize(
    "policy, words",
    [
        ("rules:\n  - {min_accuracy: 0.9, max_latency: 3}\n", "max_latency"),
        ("rules:\n  - {min_accuracy: 95}\n", "did you mean 0.95"),
        ("rules:\n  - {min_agreement: -0.1}\n", "[0, 1]"),
        ("rules:\n  - {max_accuracy_drop: -1}\n", "percentage points"),
        ("rules:\n  - {max_p90_ms: 0}\n", "positive"),
        ("rules:\n  - {max_size: 3 parsecs}\n", "KiB"),
        ("rules:\n  - {match: {modle: resnet8}, min_accuracy: 0.5}\n", "modle"),
        ("rules:\n  - {match: {model: resnet8}}\n", "sets no threshold"),
        ("regression: {tolerance: -0.1}\n", "tolerance"),
        ("regression: {confidence: 1.5}\n", "confidence"),
        ("rules: []\n", "checks nothing"),
        ("thresholds: {}\n", "valid: ['fail_on_skipped', 'regression', 'rules', 'version']"),
        ("rules: [\n", "not valid YAML"),
        ("- 1\n", "must be a mapping"),
    ],
)
def test_bad_policies_are_one_line_usage_errors(files, capsys, policy, words):
    code, _ = gate(files, make_results(make_record()), policy)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err


def test_unknown_key_error_lists_the_valid_ones(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("rules:\n  - {min_acuracy: 0.9}\n")
    with pytest.raises(ConfigError) as exc:
        load_policy(path)
    msg = str(exc.value)
    assert "rules.0" in msg and "min_acuracy" in msg and "min_accuracy" in msg and "max_size" in msg


@pytest.mark.parametrize(
    "content, words",
    [
        ("{not json", "not valid JSON"),
        ({"kind": "something else"}, "not a modelpress results file"),
        (
            {"kind": "modelpress.results", "schema_version": 0, "records": []},
            "schema_version 0",
        ),
        ({"kind": "modelpress.results", "schema_version": 99}, "schema_version 99"),
    ],
)
def test_malformed_or_old_results_are_usage_errors(files, capsys, content, words):
    argv = [files("results.json", content), "--policy", files("gates.yaml", POLICY)]
    assert main(argv) == 2
    assert words in capsys.readouterr().err


def test_results_that_break_the_schema_name_the_field(files, capsys):
    doc = json.loads(make_results(make_record()).model_dump_json())
    doc["records"][0]["status"] = "great"
    doc["records"][0]["surprise"] = 1
    assert main([files("results.json", doc), "--policy", files("gates.yaml", POLICY)]) == 2
    err = capsys.readouterr().err
    assert "records.0.status" in err and "regenerate" in err


def test_missing_files_and_bad_flags_exit_2(files, tmp_path):
    assert main([str(tmp_path / "none.json"), "--policy", files("gates.yaml", POLICY)]) == 2
    assert main([files("results.json", make_results(make_record()))]) == 2  # --policy missing


def test_parse_size_units():
    assert parse_size("1.5 MB") == 1_500_000
    assert parse_size("512 KiB") == 524_288
    assert parse_size(2000) == 2000
    assert Rule(max_size="1 GiB").max_size == 2**30


def test_gate_as_a_module_exits_with_the_gate_code(files):
    import subprocess

    res = files("results.json", make_results(make_record(accuracy=0.5)))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelpress.measure.gate",
            res,
            "--policy",
            files("gates.yaml", POLICY),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1, proc.stderr
    assert "min_accuracy" in proc.stdout and "1 failed" in proc.stdout


def test_example_policy_gates_like_the_docs_say(files):
    from conftest import ROOT

    example = (ROOT / "examples" / "gates.yaml").read_text()
    policy = load_policy(ROOT / "examples" / "gates.yaml")
    assert policy.regression.tolerance == 0.10 and len(policy.rules) == 3
    current = make_results(make_record(), make_record(precision="fp32", seed=3))
    baseline = make_results(make_record(seed=5), make_record(precision="fp32", seed=7))
    assert gate(files, current, example, baseline)[0] == 0
    slower = make_results(make_record(speed=1.3), make_record(precision="fp32", seed=3))
    assert gate(files, slower, example, baseline)[0] == 1
