import subprocess
import sys

HEAVY = (
    "onnxruntime",
    "ai_edge_litert",
    "tflite_runtime",
    "litert_torch",
    "tensorrt",
    "jax",
    "transformers",
)


def test_import_pulls_in_no_runtime():
    code = (
        "import sys, modelpress, modelpress.cli, modelpress.data, modelpress.models, "
        "modelpress.train, modelpress.checkpoint, modelpress.metrics, modelpress.baselines\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_bare_import_does_not_import_torch():
    out = subprocess.run(
        [sys.executable, "-c", "import sys, modelpress; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"
