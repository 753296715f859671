"""``make gpu-wheels``: the wheels ``make gpu-check`` needs on an air-gapped GPU node, beyond its base.

The node has a Python with a *base* preinstalled (default: torch 2.11, Triton 3.6, transformers 5.17,
accelerate, peft, and their dependency closure) and no package index. This script, run where pip
reaches an index, writes one folder per *target* into ``gpu_wheels/`` (``--out``):

- ``pytest``: what the pytest part needs (pytest, hypothesis);
- one per host of ``benchmarks/hosts.py`` (``ms-swift``, ``llamafactory``, ``trl``): the host
  package and everything it needs that the base lacks (``datasets`` first of all).

On the node, each folder is installed with
``pip install --no-index --target gpu_site/<target> gpu_wheels/<target>/*.whl`` and
``benchmarks/gpu_check.py`` finds ``gpu_site/<target>`` by itself. rift-losses itself needs no wheel:
the check runs from the checkout (it needs ``tests/`` and ``benchmarks/`` too), which is on ``sys.path``.

Method, per target: ``pip install --dry-run --ignore-installed --report`` (``--python-version``,
``--platform``, ``--only-binary=:all:``) resolves the base alone and the target together with the
base, without installing; the target's wheels are its resolution minus the base's (same name and
version). A host whose pins exclude the base's version of a package (LLaMA-Factory 0.9.5 needs
transformers <= 5.6) is resolved again with only ``torch`` and ``triton`` pinned: its folder then
carries its own version of that package, which shadows the base's for that host's runs only (the
manifest names it). Only those wheels are downloaded (``pip download --no-deps``): never torch,
Triton or a CUDA (``nvidia-*``) wheel, which the resolution sees only as metadata-only stand-ins
(their own pure-Python requirements). A requirement published only as a source archive is built
into a wheel here (``pip wheel --no-deps``; pure Python, or an ``abi3`` wheel pip found for this
machine's Python that the node's newer one also loads) and offered to the resolution.

``gpu_wheels/manifest.json`` and ``manifest.md`` list per target the wheels, their sizes and the
total, and whether the target fits one transfer of ``--budget-mib`` (default 64 MiB); a target that
does not fit is named with its size and split into transfers of at most the budget (largest first).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024

#: The node's preinstalled packages (the issue's example node).
BASE = ("torch==2.11.*", "triton==3.6.*", "transformers==5.17.*", "accelerate", "peft")

#: Base packages never downloaded, stood in for by metadata-only wheels during resolution:
#: name -> that package's own requirements without the CUDA wheels (torch 2.x's METADATA).
HEAVY = {
    "torch": (
        "filelock",
        "typing-extensions>=4.10.0",
        "setuptools",
        "sympy>=1.13.3",
        "networkx>=2.5.1",
        "jinja2",
        "fsspec>=0.8.5",
    ),
    "triton": (),
}
#: Name prefixes that must never be downloaded (CUDA runtime wheels: gigabytes).
NEVER_PREFIXES = ("nvidia-", "cuda-", "torch", "triton")

#: Pinned for every host: the oldest pyarrow that every host's ``datasets`` accepts (datasets 4.8
#: needs >= 21). pyarrow is the largest wheel of every host (cp312 manylinux_2_28: 21.0.0 is 40.8 MiB,
#: 26.0.1 52.5 MiB), and 21.0.0 is what lets TRL's folder fit one 64 MiB transfer.
SMALLEST = ("pyarrow==21.0.0",)

#: What each target needs beyond the base. The host pins follow envs/<host>.txt (TRL: datasets 4.8.4); LLaMA-Factory is
#: installed like there: its own requirements listed (minus the audio/video/web-UI extras that text
#: SFT never imports), the package and torchaudio (the base's torch version) without their dependencies.
TARGETS = {
    "pytest": {"requirements": ("pytest>=8", "hypothesis>=6.100"), "no_deps": ()},
    "ms-swift": {"requirements": ("ms-swift==4.6.0", *SMALLEST), "no_deps": ()},
    "llamafactory": {
        "requirements": (
            "transformers==5.6.0",
            "datasets==4.0.0",
            "accelerate==1.11.0",
            "peft==0.18.1",
            "trl==0.24.0",
            "torchvision",
            "einops",
            "fastapi",
            "fire",
            "hf-transfer",
            "matplotlib>=3.7.0",
            "modelscope",
            "numpy",
            "omegaconf",
            "packaging",
            "pandas",
            "protobuf",
            "pydantic",
            "pyyaml",
            "safetensors",
            "scipy",
            "sentencepiece",
            "sse-starlette",
            "tiktoken",
            "torchdata>=0.10.0,<=0.11.0",
            "tyro<0.9.0",
            "uvicorn",
            *SMALLEST,
        ),
        "no_deps": ("llamafactory==0.9.5", "torchaudio=={torch}"),
    },
    "trl": {"requirements": ("trl==1.16.0", "datasets==4.8.4", *SMALLEST), "no_deps": ()},
}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def never_download(name: str) -> bool:
    """Whether ``name`` is a base heavy package or a CUDA wheel (``torchvision``/``torchaudio`` are not)."""
    name = canonical(name)
    return name in HEAVY or name.startswith(("nvidia-", "cuda-"))


# ------------------------------------------------------------------------- pure logic (tested)


def closure(report: dict) -> dict:
    """``{canonical name: {"name", "version", "url"}}`` of a ``pip install --report`` JSON."""
    out = {}
    for item in report["install"]:
        meta = item["metadata"]
        out[canonical(meta["name"])] = {
            "name": meta["name"],
            "version": meta["version"],
            "url": item.get("download_info", {}).get("url", ""),
        }
    return out


def difference(target: dict, base: dict) -> tuple[dict, dict]:
    """The target's packages not in the base at the same version, and the base packages it replaces.

    Returns ``(needed, shadowed)``: ``needed`` maps names to entries of ``target``; ``shadowed`` maps
    a base package's name to ``(base version, target version)``. Raises ``ValueError`` if a needed
    package must never be downloaded (the base's torch/Triton or a CUDA wheel)."""
    needed, shadowed = {}, {}
    for name, entry in target.items():
        if name in base and base[name]["version"] == entry["version"]:
            continue
        if never_download(name):
            raise ValueError(
                f"the resolution must keep the base's {name}, got {entry['name']} {entry['version']}"
                + (f" (base {base[name]['version']})" if name in base else "")
            )
        needed[name] = entry
        if name in base:
            shadowed[name] = (base[name]["version"], entry["version"])
    return needed, shadowed


def batches(sizes: dict, budget: int) -> list[list[str]]:
    """First-fit decreasing packing of ``{file: bytes}`` into transfers of at most ``budget`` bytes.

    A file larger than the budget gets a transfer of its own (the manifest flags it)."""
    bins: list[tuple[int, list[str]]] = []
    for file, size in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])):
        for i, (used, files) in enumerate(bins):
            if used + size <= budget:
                bins[i] = (used + size, [*files, file])
                break
        else:
            bins.append((size, [file]))
    return [files for _, files in bins]


def target_manifest(name: str, wheels: dict, *, budget: int, shadowed: dict, route: str) -> dict:
    """The manifest entry of one target from ``{file: bytes}``."""
    total = sum(wheels.values())
    entry = {
        "wheels": dict(sorted(wheels.items())),
        "count": len(wheels),
        "total_bytes": total,
        "total_mib": round(total / MIB, 2),
        "fits": total <= budget,
        "resolved": route,
        "shadows_base": {k: {"base": b, "target": t} for k, (b, t) in sorted(shadowed.items())},
    }
    if not entry["fits"]:
        entry["transfers"] = batches(wheels, budget)
        entry["too_large"] = sorted(f for f, s in wheels.items() if s > budget)
    return entry


def markdown(manifest: dict) -> str:
    m = manifest["meta"]
    lines = [
        "# gpu_wheels: what `make gpu-check` needs beyond the node's base",
        "",
        f"- target: Python {m['python_version']}, {m['platform']}; base: {', '.join(m['base'])}",
        f"- budget per transfer: {m['budget_mib']} MiB",
        "",
        "| target | wheels | MiB | fits | resolved | shadows the base's |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, t in manifest["targets"].items():
        if "error" in t:
            lines.append(f"| {name} | - | - | NO: {t['error'].splitlines()[0][:200]} | - | - |")
            continue
        shadow = ", ".join(f"{k} {v['base']} -> {v['target']}" for k, v in t["shadows_base"].items()) or "-"
        fits = "yes" if t["fits"] else f"NO: {len(t['transfers'])} transfers"
        lines.append(f"| {name} | {t['count']} | {t['total_mib']:.1f} | {fits} | {t['resolved']} | {shadow} |")
    lines.append("")
    for name, t in manifest["targets"].items():
        if "wheels" in t:
            lines += [f"## {name}", ""]
            lines += [f"- {f}: {s / MIB:.2f} MiB" for f, s in sorted(t["wheels"].items(), key=lambda kv: -kv[1])]
            lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ pip calls


def platforms(tag: str) -> list[str]:
    """``manylinux_2_28_x86_64`` and every older manylinux tag a glibc 2.28 node loads (pip 23 does not
    expand a ``manylinux_2_X`` ``--platform`` by itself); other tags as given."""
    m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", tag)
    if not m:
        return [tag]
    minor, arch = int(m.group(1)), m.group(2)
    tags = [f"manylinux_2_{v}_{arch}" for v in range(minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    return tags + [f"{name}_{arch}" for v, name in legacy.items() if v <= minor]


def _stub(directory: Path, name: str, version: str, requires) -> None:
    """A metadata-only wheel of ``name`` ``version``: lets the resolution see the base without it."""
    dist = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    with zipfile.ZipFile(directory / f"{name}-{version}-py3-none-any.whl", "w") as z:
        z.writestr(f"{dist}/METADATA", meta)
        wheel = "Wheel-Version: 1.0\nGenerator: rift-gpu-wheels\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        z.writestr(f"{dist}/WHEEL", wheel)
        z.writestr(f"{dist}/RECORD", "")


def _heavy_version(spec: str) -> str:
    """``torch==2.11.*`` -> ``2.11.0`` (the version of the stand-in, which carries a ``+stub`` label:
    it matches the pins and sorts above the real wheel of that version)."""
    m = re.fullmatch(r"[A-Za-z0-9_.-]+==([0-9.]+?)(\.\*)?", spec)
    if not m:
        raise ValueError(f"--base must pin torch and triton as NAME==X.Y.* or NAME==X.Y.Z, got {spec!r}")
    version = m.group(1)
    return version + ".0" * (2 - version.count(".")) if m.group(2) else version


class Pip:
    def __init__(self, *, python_version: str, platform: str, links: Path, log):
        self.python_version, self.platform, self.links, self.log = python_version, platform, links, log

    def _flags(self):
        return [
            "--python-version",
            self.python_version,
            *(f"--platform={tag}" for tag in platforms(self.platform)),
            "--only-binary=:all:",
            "--find-links",
            str(self.links),
        ]

    def resolve(self, requirements, *, no_deps=False) -> dict:
        """The resolution of ``requirements`` as :func:`closure`; sdist-only ones are built here."""
        for _ in range(12):
            with tempfile.TemporaryDirectory() as tmp:
                report = Path(tmp) / "report.json"
                cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
                cmd += ["--report", str(report), "--target", str(Path(tmp) / "t"), *self._flags()]
                cmd += ["--no-deps"] if no_deps else []
                proc = self._run(cmd + list(requirements))
                if proc.returncode == 0:
                    return closure(json.loads(report.read_text()))
            missing = re.search(r"No matching distribution found for (\S+)", proc.stderr)
            if not missing:
                raise RuntimeError(f"pip could not resolve {list(requirements)}:\n{proc.stderr[-3000:]}")
            self._build_sdist(missing.group(1))
        raise RuntimeError(f"pip could not resolve {list(requirements)}: too many source-only packages")

    def _build_sdist(self, requirement: str) -> None:
        name = canonical(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0])
        here = [p.name for p in self.links.glob("*.whl") if canonical(p.name.split("-")[0]) == name]
        if never_download(name) or here:
            raise RuntimeError(
                f"pip found no wheel of {requirement} for Python {self.python_version}, {self.platform}"
                + (f"; the one built here from its source ({', '.join(here)}) does not load there" if here else "")
            )
        self.log(f"  building a wheel of {requirement} (published as a source archive only)")
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(self.links)]
        proc = self._run(cmd + [requirement])
        built = [p for p in self.links.glob("*.whl") if canonical(p.name.split("-")[0]) == name]
        if proc.returncode != 0 or not built:
            raise RuntimeError(f"building a wheel of {requirement} failed:\n{proc.stderr[-2000:]}")
        if not re.search(r"-(none-any|abi3-manylinux[^-]*x86_64)\.whl$", built[0].name):
            raise RuntimeError(f"{requirement} is not pure Python ({built[0].name}): not buildable here for the node")

    def download(self, entries: dict, dest: Path) -> dict:
        """``pip download --no-deps`` of exactly ``entries`` into ``dest``; ``{file: bytes}``."""
        dest.mkdir(parents=True, exist_ok=True)
        pins = [f"{e['name']}=={e['version']}" for e in entries.values()]
        if pins:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(dest)]
            proc = self._run(cmd + self._flags() + pins)
            if proc.returncode != 0:
                raise RuntimeError(f"pip download failed:\n{proc.stderr[-3000:]}")
        files = {p.name: p.stat().st_size for p in dest.glob("*.whl")}
        got = {canonical(f.split("-")[0]) for f in files}
        if got != set(entries):
            raise RuntimeError(f"{dest} must hold exactly {sorted(entries)}, got {sorted(files)}")
        return files

    def _run(self, cmd):
        return subprocess.run(cmd, capture_output=True, text=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "gpu_wheels"), help="output folder (default gpu_wheels/)")
    p.add_argument("--python-version", default="3.12", help="the node's Python, e.g. 3.12")
    p.add_argument("--platform", default="manylinux_2_28_x86_64", help="the node's wheel platform tag")
    p.add_argument("--base", default=" ".join(BASE), help="the node's preinstalled requirements (space-separated)")
    p.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated of {', '.join(TARGETS)}")
    p.add_argument("--budget-mib", type=float, default=64.0, help="most MiB one transfer may carry (default 64)")
    args = p.parse_args(argv)
    targets = args.targets.split(",")
    for t in targets:
        if t not in TARGETS:
            p.error(f"--targets must be among {', '.join(TARGETS)}, got {t!r}")
    base_specs = args.base.split()
    heavy = {}
    for spec in base_specs:
        name = canonical(re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0])
        if name in HEAVY:
            heavy[name] = _heavy_version(spec)
    if set(heavy) != set(HEAVY):
        p.error(f"--base must pin {' and '.join(HEAVY)}, got {args.base!r}")
    out = Path(args.out).resolve()
    budget = int(args.budget_mib * MIB)

    def log(msg):
        print(msg, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        links = Path(tmp)
        for name, version in heavy.items():
            _stub(links, name, f"{version}+stub", HEAVY[name])
        pip = Pip(python_version=args.python_version, platform=args.platform, links=links, log=log)
        log(f"resolving the base: {' '.join(base_specs)}")
        base = pip.resolve(base_specs)
        heavy_pins = [f"{n}=={v}+stub" for n, v in heavy.items()]
        manifest = {
            "meta": {
                "python_version": args.python_version,
                "platform": args.platform,
                "base": base_specs,
                "base_closure": {n: e["version"] for n, e in sorted(base.items())},
                "budget_mib": args.budget_mib,
                "install": "pip install --no-index --target gpu_site/<target> gpu_wheels/<target>/*.whl",
            },
            "targets": {},
        }
        failed = []
        for t in targets:
            spec = TARGETS[t]
            no_deps = [r.format(**heavy) for r in spec["no_deps"]]
            log(f"[{t}] resolving {' '.join([*spec['requirements'], *no_deps])} on the base")
            try:
                try:
                    resolved = pip.resolve([*spec["requirements"], *base_specs])
                    route = "with the base"
                except RuntimeError:
                    resolved = pip.resolve([*spec["requirements"], *heavy_pins])
                    route = "with torch and triton of the base only"
                if no_deps:
                    resolved.update(pip.resolve([*no_deps, *heavy_pins], no_deps=True))
                needed, shadowed = difference(resolved, base)
                dest = out / t
                if dest.exists():
                    shutil.rmtree(dest)
                wheels = pip.download(needed, dest)
                entry = target_manifest(t, wheels, budget=budget, shadowed=shadowed, route=route)
            except (RuntimeError, ValueError) as exc:
                entry = {"error": str(exc)}
                failed.append(t)
            manifest["targets"][t] = entry
            log(f"[{t}] " + (entry.get("error") or f"{entry['count']} wheels, {entry['total_mib']:.1f} MiB"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    text = markdown(manifest)
    (out / "manifest.md").write_text(text)
    print(text)
    over = [t for t, e in manifest["targets"].items() if "fits" in e and not e["fits"]]
    if over:
        print(f"over the {args.budget_mib:g} MiB budget of one transfer: {', '.join(over)}", file=sys.stderr)
    if failed:
        print(f"gpu-wheels FAILED for: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
