"""Both Triton kernels compile for real GPU targets (sm_80, sm_90, sm_100) on a machine without one.

Triton's interpreter (test_logprobs_impl.py) runs the kernels' Python; it accepts code that the
compiler rejects. Here each kernel goes through the whole compiler, Triton IR -> PTX -> cubin with
the ptxas that Triton bundles, for ``GPUTarget("cuda", cc, 32)``, in every dtype the kernels accept,
with the signature and attributes Triton's launcher would derive from real arguments (16-byte
alignment, divisibility by 16, stride 1 as a constant) and the launch options the wrappers use
(``BLOCK_V``, ``num_warps``). Each cubin's resources are read back: registers per thread from the
cubin itself (``cuobjdump --dump-resource-usage``), spill stores/loads and stack from ``ptxas -v``
on the same PTX. The table is printed (``pytest -s``) and bounded:

- no spills and no stack frame (a spill on these streaming kernels would cost bandwidth);
- at most 128 registers per thread (8 warps x 32 threads x 128 = 32K registers, half an SM's
  register file on every target: at least two programs per SM).

Runs in ``make test`` in the LLaMA-Factory environment, whose torch ships Triton (3.8 there).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

HAS_TRITON = importlib.util.find_spec("triton") is not None
pytestmark = pytest.mark.skipif(not HAS_TRITON, reason="the triton package is not installed in this environment")

#: The one place the kernels are imported from (a move to another module is a one-line change here).
KERNELS_MODULE = "rift_losses._triton_logprobs"

ARCHS = (80, 90, 100)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
#: the Qwen2.5 vocabulary (divisible by 16) and an odd one (no divisibility attribute, masked tail)
VOCABS = (151936, 32001)
MAX_REGISTERS = 128


def _kernels():
    return importlib.import_module(KERNELS_MODULE)


def launch_args(kernel: str, dtype: torch.dtype, V: int) -> tuple[list, dict]:
    """Positional arguments as the wrappers pass them (small real tensors, real strides) and constexprs."""
    k = _kernels()
    import triton

    logits = torch.empty(2, V, dtype=dtype)
    target = torch.zeros(2, dtype=torch.int64)
    f32 = torch.zeros(2, dtype=torch.float32)
    block_v = min(k._BLOCK_V, triton.next_power_of_2(V))
    if kernel == "forward":
        args = [logits, logits.stride(0), logits.stride(1), target, f32, f32.clone(), V]
    else:
        out = torch.empty_like(logits)
        args = [
            logits,
            logits.stride(0),
            logits.stride(1),
            out,
            out.stride(0),
            out.stride(1),
            target,
            f32,
            f32.clone(),
            V,
        ]
    return args, {"BLOCK_V": block_v}


def compile_kernel(kernel: str, dtype_name: str, V: int, cc: int):
    """``triton.compile`` of one kernel for ``cuda:cc`` with the launcher's specialization; the compiled kernel."""
    import triton
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend, GPUTarget
    from triton.compiler import ASTSource

    k = _kernels()
    fn = k._forward_kernel if kernel == "forward" else k._backward_kernel
    args, constexprs = launch_args(kernel, DTYPES[dtype_name], V)
    names = [p.name for p in fn.params]
    signature, attrs = {}, {}
    for i, (name, arg) in enumerate(zip(names, args)):
        ty, spec = native_specialize_impl(BaseBackend, arg, False, True, True)
        signature[name] = ty
        if ty == "constexpr":
            constexprs[name] = spec
        elif spec:
            attrs[(i,)] = BaseBackend.parse_attr(spec)
    for name in constexprs:
        signature.setdefault(name, "constexpr")
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", cc, 32), options={"num_warps": k._NUM_WARPS})


def resources(compiled, cc: int) -> dict:
    """Registers (cuobjdump on the cubin) and spill/stack bytes (ptxas -v on the same PTX)."""
    from triton import knobs
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp, "k.cubin")
        cubin.write_bytes(compiled.asm["cubin"])
        dump = subprocess.run(
            [knobs.nvidia.cuobjdump.path, "--dump-resource-usage", str(cubin)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        ptx = Path(tmp, "k.ptx")
        ptx.write_text(compiled.asm["ptx"])
        log = subprocess.run(
            [
                get_ptxas(cc).path,
                "-v",
                f"--gpu-name={sm_arch_from_capability(cc)}",
                str(ptx),
                "-o",
                str(Path(tmp, "again.cubin")),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    info = log.stdout + log.stderr
    regs = re.search(r"REG:(\d+)", dump)
    stack = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", info)
    used = re.search(r"Used (\d+) registers", info)
    assert regs and stack and used, (dump, info)
    return {
        "regs": int(regs.group(1)),
        "ptxas_regs": int(used.group(1)),
        "stack": int(stack.group(1)),
        "spill_stores": int(stack.group(2)),
        "spill_loads": int(stack.group(3)),
        "cubin_bytes": len(compiled.asm["cubin"]),
    }


CASES = [(kernel, d, V, cc) for kernel in ("forward", "backward") for d in DTYPES for V in VOCABS for cc in ARCHS]


@pytest.fixture(scope="module")
def table():
    rows = {}
    yield rows
    if rows:
        print(
            f"\n{'kernel':<9} {'dtype':<5} {'V':>7} {'target':<7} {'regs':>4} {'spill st/ld':>11} {'stack':>5} "
            f"{'cubin B':>8}"
        )
        for (kernel, d, V, cc), r in sorted(rows.items()):
            print(
                f"{kernel:<9} {d:<5} {V:>7} sm_{cc:<4} {r['regs']:>4} {r['spill_stores']:>5}/{r['spill_loads']:<5} "
                f"{r['stack']:>5} {r['cubin_bytes']:>8}"
            )


@pytest.mark.parametrize("kernel,dtype_name,V,cc", CASES, ids=[f"{k}-{d}-V{V}-sm{cc}" for k, d, V, cc in CASES])
def test_kernel_compiles_for_gpu_target_without_spills(kernel, dtype_name, V, cc, table):
    compiled = compile_kernel(kernel, dtype_name, V, cc)
    cubin = compiled.asm["cubin"]
    assert cubin[:4] == b"\x7fELF", "the compiler did not produce a cubin"
    name = f"_{kernel}_kernel"
    assert f".entry {name}" in compiled.asm["ptx"], f"{name} is not an entry of the PTX"
    assert f".target sm_{cc}" in compiled.asm["ptx"], compiled.asm["ptx"][:400]
    r = resources(compiled, cc)
    table[(kernel, dtype_name, V, cc)] = r
    assert r["regs"] == r["ptxas_regs"], r  # the cubin Triton built and ptxas -v agree
    assert r["spill_stores"] == r["spill_loads"] == r["stack"] == 0, f"{name} sm_{cc} {dtype_name} V={V} spills: {r}"
    assert 0 < r["regs"] <= MAX_REGISTERS, f"{name} sm_{cc} {dtype_name} V={V} uses {r['regs']} registers per thread"
