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
VERL_VENV := .venvs/verl
VERL_PY := $(VERL_VENV)/bin/python
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
SWIFT_TESTS := $(wildcard tests/core tests/data tests/docs tests/swift)
# It also compiles both kernels for sm_80/sm_90/sm_100 with Triton's bundled ptxas (no GPU needed).
# tests/benchmarks rehearses `make gpu-check` on the CPU (--dry-run), from the base Python outside the venvs
# (the venv's packages as a plain folder on PYTHONPATH; the TRL host from a --target-like folder).
LF_TESTS := $(wildcard tests/core/test_logprobs_impl.py tests/core/test_triton_compile.py \
	tests/core/test_inplace_version.py tests/llamafactory tests/benchmarks)
TRL_TESTS := $(wildcard tests/trl)
VERL_TESTS := $(wildcard tests/verl)

.PHONY: test lint test-core test-swift test-lf test-trl test-verl test-smoke test-online-smoke demo reproduce \
	reproduce-online bench bench-hosts bench-methods gpu-check gpu-wheels venvs clean

# The suites share nothing (each its own venv, pytest's own temporary folders, rendezvous ports
# chosen by the OS), so they run side by side: on 2 cores most of a suite's time is single-threaded
# host start-up. TEST_JOBS=1 runs them one after the other. Each suite's output is printed whole
# when it ends (--output-sync); tests/summary.py then adds up the JUnit reports of all of them.
TEST_JOBS ?= 2
TEST_OUT := test_out
SUITES := test-swift test-lf test-trl test-verl test-smoke test-online-smoke

test: venvs lint
	rm -rf $(TEST_OUT) && mkdir -p $(TEST_OUT)
	$(MAKE) --no-print-directory -k -j$(TEST_JOBS) --output-sync=target $(SUITES); \
	status=$$?; $(SWIFT_PY) tests/summary.py $(TEST_OUT) $(SUITES) || status=1; exit $$status

test-swift: $(SWIFT_VENV)/.ready
	$(SWIFT_PY) -m pytest $(SWIFT_TESTS) --junitxml=$(TEST_OUT)/test-swift.xml $(PYTEST_ARGS)

test-lf: $(LF_VENV)/.ready
	$(LF_PY) -m pytest $(LF_TESTS) --junitxml=$(TEST_OUT)/test-lf.xml $(PYTEST_ARGS)

test-trl: $(TRL_VENV)/.ready
	$(TRL_PY) -m pytest $(TRL_TESTS) --junitxml=$(TEST_OUT)/test-trl.xml $(PYTEST_ARGS)

# The whole reproduction at toy sizes (every arm, about 2 minutes); writes a marker the summary reads.
test-smoke: $(SWIFT_VENV)/.ready
	mkdir -p $(TEST_OUT) && $(SWIFT_PY) reproduce/run.py --smoke --out reproduce_out/smoke \
		&& $(SWIFT_PY) reproduce/verify.py reproduce_out/smoke/results.json && touch $(TEST_OUT)/test-smoke.ok

test-verl: $(VERL_VENV)/.ready
	$(VERL_PY) -m pytest $(VERL_TESTS) --junitxml=$(TEST_OUT)/test-verl.xml $(PYTEST_ARGS)

# Online RIFT against TRL's dapo at toy sizes (reproduce/online.py --smoke checks its own result).
test-online-smoke: $(TRL_VENV)/.ready
	mkdir -p $(TEST_OUT) && $(TRL_PY) reproduce/online.py --smoke --out reproduce_out/online_smoke \
		&& touch $(TEST_OUT)/test-online-smoke.ok

# ruff (pyproject.toml's [tool.ruff]): lint and formatting of the whole tree; CI fails on either.
# Then the docs: every measured table equals its result file in docs/data/, and every relative
# link and #anchor in README.md, CONTRIBUTING.md and docs/*.md resolves (CONTRIBUTING.md, "Docs").
lint: $(SWIFT_VENV)/.ready
	$(SWIFT_VENV)/bin/ruff check .
	$(SWIFT_VENV)/bin/ruff format --check .
	$(SWIFT_PY) docs/tables.py --check
	$(SWIFT_PY) docs/check_links.py

test-core: $(SWIFT_VENV)/.ready
	$(SWIFT_PY) -m pytest tests/core $(PYTEST_ARGS)

# The main job on the embedded default: label the shipped rollouts, print their stats, train RIFT
# (and the naive loss) in MS-Swift and RIFT in LLaMA-Factory, write demo_out/rift_vs_naive.png.
demo: venvs
	$(SWIFT_PY) demo/run_demo.py $(DEMO_ARGS)

# The paper's recipe end to end, offline (reproduce/run.py explains each step; docs/reproduce.md the
# protocol): a base trained with `swift sft`, 2 samples per train problem with `swift sample`, labelled,
# SFT/DFT/RFT/DPO/naive/RIFT arms (3 epochs each, LR chosen on val), a second RFT and RIFT round,
# mean@8 and pass@8 on held-out problems, 5 seeds, paired statistics. Writes reproduce_out/results.json,
# results.md, results.png and the labelled evaluation files (checked by reproduce/verify.py). Protocol
# version 8: 86.5 minutes on an idle 2-core Intel Xeon (2026-12-05; estimated at about 87 before it
# ran). REPRODUCE_ARGS=--smoke: about 2 minutes.
reproduce: $(SWIFT_VENV)/.ready
	$(SWIFT_PY) reproduce/run.py $(REPRODUCE_ARGS)

# Online RIFT (TRL's GRPOTrainer, loss_type=rift) against TRL's dapo on the same task, from a base
# trained with TRL's SFTTrainer; LR chosen on val as offline, 3 seeds, mean@8/pass@8 on held-out problems
# (reproduce/online.py explains each step). Writes reproduce_out/online/results.{json,md}. 5 minutes on an
# idle 2-core CPU (2026-12-04); ONLINE_ARGS=--smoke: under a minute.
reproduce-online: $(TRL_VENV)/.ready
	$(TRL_PY) reproduce/online.py $(ONLINE_ARGS)

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
# Needs no venv and no index: GPU_PYTHON (default: the LLaMA-Factory venv's Python if it exists, else
# $(PYTHON)) with torch and Triton runs it; each host runs from .venvs/<host> if it exists, else from
# gpu_site/<host> (see gpu-wheels), else from GPU_PYTHON itself; a host none of them has is named in
# the report (an error unless GPU_CHECK_ARGS=--hosts ... leaves it out). docs/performance.md has the steps.
GPU_OUT ?= $(or $(RIFT_GPU_OUT),gpu_out)
GPU_PYTHON ?= $(if $(wildcard $(LF_PY)),$(LF_PY),$(PYTHON))
gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py --out $(GPU_OUT) $(GPU_CHECK_ARGS)

# Run where pip reaches an index: gpu_wheels/<target>/ with exactly the wheels gpu-check needs beyond
# the node's base (torch, Triton, transformers, accelerate, peft), for PYTHON_VERSION and GPU_PLATFORM,
# and gpu_wheels/manifest.{json,md} (sizes; which target fits one GPU_WHEELS_BUDGET_MIB transfer).
# Never downloads torch, Triton or CUDA wheels. benchmarks/gpu_wheels.py explains the method.
PYTHON_VERSION ?= 3.12
GPU_PLATFORM ?= manylinux_2_28_x86_64
GPU_WHEELS_BUDGET_MIB ?= 64
gpu-wheels:
	$(PYTHON) benchmarks/gpu_wheels.py --out gpu_wheels --python-version $(PYTHON_VERSION) \
		--platform $(GPU_PLATFORM) --budget-mib $(GPU_WHEELS_BUDGET_MIB) $(GPU_WHEELS_ARGS)

venvs: $(SWIFT_VENV)/.ready $(LF_VENV)/.ready $(TRL_VENV)/.ready $(VERL_VENV)/.ready

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

# verl 0.9.1 (its own env: it pins transformers>=5.5.3,<5.11 and Python<3.13), without GPU extras.
$(VERL_VENV)/.ready: envs/verl.txt pyproject.toml
	test -x $(VERL_PY) || $(PYTHON) -m venv $(VERL_VENV)
	$(VERL_PY) -m pip install $(PIP_QUIET) -r envs/verl.txt
	$(VERL_PY) -m pip install $(PIP_QUIET) --no-deps $(EDITABLE) .
	touch $@

clean:
	rm -rf .venvs
