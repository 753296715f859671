"""Zero-flag activation: the .pth hook imports nothing heavy, can be turned off, never breaks LF.

(Its start-up cost is measured by ``benchmarks/bench_lf_startup.py``, which prints figures.)
"""

import json

import pytest

_START = r"""
import json, sys
hook = sys.modules.get("_rift_losses_hook")
print(json.dumps({
    "hook": hook is not None,
    "finder": any(type(f).__module__ == "_rift_losses_hook" for f in sys.meta_path),
    "heavy": sorted(m for m in ("torch", "rift_losses", "llamafactory", "transformers") if m in sys.modules),
}))
"""


def test_interpreter_start_imports_nothing_heavy(lf):
    """At start the .pth leaves only its finder; RIFT_LOSSES_AUTOLOAD=0 leaves not even that."""
    on = json.loads(lf.python(_START).stdout)
    assert on == {"hook": True, "finder": True, "heavy": []}
    off = json.loads(lf.python(_START, env={"RIFT_LOSSES_AUTOLOAD": "0"}).stdout)
    assert off["finder"] is False and off["heavy"] == []


_BROKEN = r"""
import json, sys
sys.modules["rift_losses.integrations.llamafactory._args"] = None  # the adapter cannot import
import _rift_losses_hook
from llamafactory.hparams import get_train_args
spec = json.loads(sys.argv[1])
out = {"stored": repr(_rift_losses_hook.errors.get("llamafactory.hparams.parser"))}
out["plain"] = type(get_train_args(spec["plain"])[3]).__name__
try:
    get_train_args(spec["rift"])
    out["rift"] = "no error"
except Exception as error:
    out["rift"] = f"{type(error).__name__}: {error}"
print("RESULTS " + json.dumps(out))
"""


@pytest.mark.slow
def test_broken_adapter_never_breaks_plain_runs_and_is_loud_for_rift(lf):
    spec = {"plain": lf.config("broken_plain"), "rift": lf.config("broken_rift", use_rift_loss=True)}
    proc = lf.python(_BROKEN, json.dumps(spec))
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULTS ")), None)
    assert line is not None, proc.stdout[-3000:]
    out = json.loads(line[len("RESULTS ") :])
    assert "halted; None in sys.modules" in out["stored"]
    assert out["plain"] == "FinetuningArguments"  # LLaMA-Factory untouched
    assert out["rift"].startswith("RuntimeError: the RIFT options ['use_rift_loss'] need rift-losses'"), out
    assert "failed to register" in out["rift"] and "halted; None in sys.modules" in out["rift"]


@pytest.mark.slow
def test_opt_out_leaves_llamafactory_alone(lf):
    """RIFT_LOSSES_AUTOLOAD=0: LLaMA-Factory does not know the keys (so the launcher test's success is its own)."""
    run = lf.train(lf.config("opt_out", use_rift_loss=True), env={"RIFT_LOSSES_AUTOLOAD": "0"})
    assert run.rc != 0
    assert "Some keys are not used by the HfArgumentParser: ['use_rift_loss']" in run.output, run.tail()
