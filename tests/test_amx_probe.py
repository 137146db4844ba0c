"""The AMX probe (webui/amx_probe.py): a CPU that advertises AMX it does not run (this project's VMs do) used to
kill Hearth with SIGILL at the first token of a quantized GGUF unless the user knew to pass --no-repack.

Anything that may die of SIGILL runs in a child process, so a wrong verdict fails a test instead of killing
the test run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from webui.amx_probe import (
    amx_advertised,
    extra_buffers_run,
    repack_takes_effect,
    run_probe,
    write_probe_gguf,
)

pytest.importorskip("llama_cpp")

CHILD_GENERATES = """
import os
import sys
from pathlib import Path
from webui.generation import GenerationCore, GenerationRequest
from webui.models import ModelManager
from webui.plugins import collect_loaders, make_plugin_manager
from webui.sampling import SamplingParams

path = Path(sys.argv[1])
manager = ModelManager(path.parent, collect_loaders(make_plugin_manager()))
model = manager.load(path.name, "llama.cpp", {"n_ctx": 256})
done = GenerationCore(manager).generate(GenerationRequest(
    prompt="Hello", max_new_tokens=6, sampling=SamplingParams(temperature=0, ban_eos_token=True)))
print(model._llm.model_params.use_extra_bufts, len(done.token_ids), flush=True)
manager.unload()  # free the model while its worker thread is alive, as the app's close does
os._exit(0)  # interpreter teardown with llama.cpp's threads still around is not what this test is about
"""


@pytest.fixture(scope="module")
def probe_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_probe_gguf(tmp_path_factory.mktemp("probe") / "probe.gguf")


def python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=180,
                          cwd=Path(__file__).resolve().parent.parent)


def test_only_a_death_by_signal_says_the_kernels_do_not_run() -> None:
    assert run_probe([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"]) == (
        False, "the probe died of SIGILL")
    runs, said = run_probe([sys.executable, "-c", "raise SystemExit('no llama.cpp here')"])
    assert runs and "no llama.cpp here" in said  # a broken probe says nothing about the CPU
    assert run_probe([sys.executable, "-c", "pass"]) == (True, "the probe ran")
    assert run_probe(["/nonexistent/python"])[0]
    assert not repack_takes_effect(False)  # --no-repack stays off whatever the probe says


def test_the_probe_model_loads_and_takes_the_amx_path(probe_gguf: Path) -> None:
    """The probe can only tell about the kernels if its model is sound (it evaluates with the weights in
    place) and, on an AMX CPU, llama.cpp really moves its weights into the AMX buffer."""
    in_place = ("import sys; from loaders.llamacpp import _model_params; from webui.amx_probe import evaluate_probe; "
                "from pathlib import Path\nwith _model_params(use_extra_bufts=False): evaluate_probe(Path(sys.argv[1]))")
    done = python("-c", in_place, str(probe_gguf))
    assert done.returncode == 0, done.stderr[-2000:]
    if not amx_advertised():
        pytest.skip("this CPU does not advertise AMX: nothing to probe")
    load_only = "import sys; from llama_cpp import Llama; Llama(sys.argv[1], n_ctx=256, verbose=True)"
    done = python("-c", load_only, str(probe_gguf))
    assert done.returncode == 0, done.stderr[-2000:]
    if "AMX model buffer size" not in done.stderr:  # built with AMX, but the kernel refused the tile state
        assert extra_buffers_run(), "no AMX buffer, so nothing can die of AMX"
        pytest.skip("llama.cpp did not turn AMX on here: the probe has nothing to find")


def test_a_default_load_of_a_quantized_model_generates(probe_gguf: Path) -> None:
    """End to end, in a child: the llama.cpp loader with its default settings (repack on) generates from a
    Q8_0 model, with llama.cpp's extra buffers used exactly where the probe says they run."""
    done = python("-c", CHILD_GENERATES, str(probe_gguf))
    assert done.returncode == 0, f"the child died ({done.returncode}): {done.stderr[-2000:]}"
    extra_bufts, tokens = done.stdout.split()[-2:]
    assert tokens == "6" and extra_bufts == str(extra_buffers_run())
