# Two commands for a newcomer: `make demo` and `make test`. Both are idempotent.
#
# MS-Swift 4.6 and LLaMA-Factory 0.9.5 cannot share one environment (their `datasets` pins
# conflict), so each host gets its own virtual environment, with this package installed
# editable in both. A venv is (re)built only when its requirement files change.

PYTHON ?= python3
SWIFT_VENV := .venvs/swift
LF_VENV := .venvs/llamafactory
TRL_VENV := .venvs/trl
SWIFT_PY := $(SWIFT_VENV)/bin/python
LF_PY := $(LF_VENV)/bin/python
TRL_PY := $(TRL_VENV)/bin/python
PIP_QUIET ?= -q
# deepspeed (in every envs/*.txt) is installed without building its C++/CUDA ops: the tests run
# its pure-PyTorch ZeRO path on the CPU over gloo, and building ops needs a CUDA toolkit.
export DS_BUILD_OPS := 0
PYTEST_ARGS ?=
# Editable installs as a plain path entry (the checkout on sys.path; rift_losses/integrations/
# stands in for the top-level integrations/ folder), not setuptools' default import finder,
# which costs every interpreter start 10-20 ms here. Given alone: pip passes --config-settings
# to every package it builds in the same command.
EDITABLE := --config-settings editable_mode=compat -e

# Test directories per environment (core tests run in the MS-Swift env; the LLaMA-Factory env,
# whose torch build ships Triton, also runs the Triton kernels in Triton's CPU interpreter).
SWIFT_TESTS := $(wildcard tests/core tests/data tests/swift)
# It also compiles both kernels for sm_80/sm_90/sm_100 with Triton's bundled ptxas (no GPU needed).
# tests/benchmarks rehearses `make gpu-check` on the CPU (--dry-run; its host part also uses .venvs/swift).
LF_TESTS := $(wildcard tests/core/test_logprobs_impl.py tests/core/test_triton_compile.py \
	tests/core/test_inplace_version.py tests/llamafactory tests/benchmarks)
TRL_TESTS := $(wildcard tests/trl)

.PHONY: test lint test-core demo reproduce bench bench-hosts bench-methods gpu-check venvs clean

test: venvs lint
	$(SWIFT_PY) -m pytest $(SWIFT_TESTS) $(PYTEST_ARGS)
	$(if $(LF_TESTS),$(LF_PY) -m pytest $(LF_TESTS) $(PYTEST_ARGS))
	$(if $(TRL_TESTS),$(TRL_PY) -m pytest $(TRL_TESTS) $(PYTEST_ARGS))
	$(SWIFT_PY) reproduce/run.py --smoke --out reproduce_out/smoke
	$(SWIFT_PY) reproduce/verify.py reproduce_out/smoke/results.json

# ruff (pyproject.toml's [tool.ruff]): lint and formatting of the whole tree; CI fails on either.
lint: $(SWIFT_VENV)/.ready
	$(SWIFT_VENV)/bin/ruff check .
	$(SWIFT_VENV)/bin/ruff format --check .

test-core: $(SWIFT_VENV)/.ready
	$(SWIFT_PY) -m pytest tests/core $(PYTEST_ARGS)

# The main job on the embedded default: label the shipped rollouts, print their stats, train RIFT
# (and the naive loss) in MS-Swift and RIFT in LLaMA-Factory, write demo_out/rift_vs_naive.png.
demo: venvs
	$(SWIFT_PY) demo/run_demo.py $(DEMO_ARGS)

# The paper's recipe end to end, offline (reproduce/run.py explains each step; docs/reproduce.md the
# protocol): a base trained with `swift sft`, K = 8 samples per problem with `swift sample`, labelled,
# SFT/DFT/RFT/DPO/naive/RIFT arms (3 epochs each, LR chosen on val), a second RFT and RIFT round,
# mean@8 and pass@8 on held-out problems, 5 seeds, paired statistics. Writes reproduce_out/results.json,
# results.md, results.png and the labelled evaluation files (checked by reproduce/verify.py). Hours on
# 2 CPU cores; REPRODUCE_ARGS=--smoke: a few minutes.
reproduce: $(SWIFT_VENV)/.ready
	$(SWIFT_PY) reproduce/run.py $(REPRODUCE_ARGS)

# Forward + backward of the RIFT loss against torch's cross-entropy paths; prints the CPU table
# (benchmarks/bench_logprobs.py explains what is timed and how peak memory is measured). Not part
# of `make test`. On a CUDA machine: python benchmarks/bench_logprobs.py (the anchor shape).
bench: $(SWIFT_VENV)/.ready
	$(SWIFT_PY) benchmarks/bench_logprobs.py $(BENCH_ARGS)

# Peak RSS of one real training step per host, plain SFT vs RIFT (float32, V = 151936; minutes,
# about 12 GB of memory). benchmarks/host_memory.py explains the method.
bench-hosts: venvs
	$(LF_PY) benchmarks/host_memory.py $(BENCH_ARGS)

# The paper's Table 7 on CPU: peak RSS of one training step per method through MS-Swift (RFT/SFT,
# RIFT, DPO with its reference model), float32, V = 151936, one ~2k-token row (one pair for DPO);
# ratios to RFT. About 20 GB of free memory (BENCH_ARGS=--response-tokens 960 for about half).
bench-methods: $(SWIFT_VENV)/.ready
	$(SWIFT_PY) benchmarks/method_memory.py $(BENCH_ARGS)

# Every GPU figure in one run on a machine with one CUDA GPU (under 8 minutes): pytest -m gpu, the
# kernel benchmark, Triton autotune table, one host step per host. Writes gpu_report.{json,md} to
# $(GPU_OUT) (or RIFT_GPU_OUT). GPU_CHECK_ARGS=--dry-run rehearses it on the CPU. Not in `make test`.
GPU_OUT ?= $(or $(RIFT_GPU_OUT),gpu_out)
gpu-check: venvs
	$(LF_PY) benchmarks/gpu_check.py --out $(GPU_OUT) $(GPU_CHECK_ARGS)

venvs: $(SWIFT_VENV)/.ready $(LF_VENV)/.ready $(TRL_VENV)/.ready

$(SWIFT_VENV)/.ready: envs/swift.txt pyproject.toml
	test -x $(SWIFT_PY) || $(PYTHON) -m venv $(SWIFT_VENV)
	$(SWIFT_PY) -m pip install $(PIP_QUIET) -r envs/swift.txt -e '.[swift,test]'
	$(SWIFT_PY) -m pip install $(PIP_QUIET) --no-deps $(EDITABLE) .
	touch $@

$(LF_VENV)/.ready: envs/llamafactory.txt pyproject.toml
	test -x $(LF_PY) || $(PYTHON) -m venv $(LF_VENV)
	$(LF_PY) -m pip install $(PIP_QUIET) -r envs/llamafactory.txt
	$(LF_PY) -m pip install $(PIP_QUIET) --no-deps torchaudio==2.11.0 llamafactory==0.9.5
	$(LF_PY) -m pip install $(PIP_QUIET) --no-deps $(EDITABLE) .
	$(LF_PY) -m pip install $(PIP_QUIET) 'pytest>=8' 'hypothesis>=6.100'
	touch $@

# TRL 1.16 (its own env: it needs a newer transformers than LLaMA-Factory 0.9.5 allows, and
# MS-Swift 4.6 pins trl<1.0).
$(TRL_VENV)/.ready: envs/trl.txt pyproject.toml
	test -x $(TRL_PY) || $(PYTHON) -m venv $(TRL_VENV)
	$(TRL_PY) -m pip install $(PIP_QUIET) -r envs/trl.txt -e '.[trl,test]'
	$(TRL_PY) -m pip install $(PIP_QUIET) --no-deps $(EDITABLE) .
	touch $@

clean:
	rm -rf .venvs
