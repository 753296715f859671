"""``benchmarks/gpu_wheels.py`` (``make gpu-wheels``): the manifest logic on pip's resolution JSON.

The pip calls need an index and minutes; what decides which wheels a node gets is checked here on
``pip install --dry-run --report`` JSON of the shape pip 23 writes: the difference to the base, the
base packages a host shadows, the refusal of torch/Triton/CUDA wheels, the transfer packing.
"""

import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import gpu_wheels  # noqa: E402

MIB = gpu_wheels.MIB


def report(*packages):
    """A ``pip install --report`` JSON with ``(name, version)`` packages."""
    return {
        "version": "1",
        "install": [
            {
                "download_info": {"url": f"https://files.example/{n}-{v}-py3-none-any.whl"},
                "metadata": {"name": n, "version": v},
            }
            for n, v in packages
        ],
    }


BASE = gpu_wheels.closure(
    report(
        ("torch", "2.11.0+stub"),
        ("triton", "3.6.0+stub"),
        ("transformers", "5.17.0"),
        ("huggingface_hub", "1.2.0"),
        ("numpy", "2.3.5"),
        ("accelerate", "1.15.0"),
        ("peft", "0.18.1"),
    )
)


def test_closure_keys_are_canonical_names():
    c = gpu_wheels.closure(report(("Huggingface_Hub", "1.2.0"), ("ruamel.yaml", "0.18.6")))
    assert set(c) == {"huggingface-hub", "ruamel-yaml"}
    assert c["ruamel-yaml"] == {
        "name": "ruamel.yaml",
        "version": "0.18.6",
        "url": "https://files.example/ruamel.yaml-0.18.6-py3-none-any.whl",
    }


def test_difference_is_what_the_base_lacks():
    host = gpu_wheels.closure(
        report(
            ("torch", "2.11.0+stub"),
            ("transformers", "5.17.0"),
            ("numpy", "2.3.5"),
            ("trl", "1.16.0"),
            ("datasets", "4.8.4"),
            ("pyarrow", "22.0.0"),
        )
    )
    needed, shadowed = gpu_wheels.difference(host, BASE)
    assert sorted(needed) == ["datasets", "pyarrow", "trl"]
    assert shadowed == {}


def test_difference_names_the_base_packages_a_host_shadows():
    host = gpu_wheels.closure(
        report(("torch", "2.11.0+stub"), ("transformers", "5.6.0"), ("Accelerate", "1.11.0"), ("llamafactory", "0.9.5"))
    )
    needed, shadowed = gpu_wheels.difference(host, BASE)
    assert sorted(needed) == ["accelerate", "llamafactory", "transformers"]
    assert shadowed == {"transformers": ("5.17.0", "5.6.0"), "accelerate": ("1.15.0", "1.11.0")}


@pytest.mark.parametrize(
    "package",
    [("torch", "2.12.0"), ("triton", "3.7.0"), ("nvidia-cudnn-cu13", "9.19.0.56"), ("nvidia_nccl_cu13", "2.28.9")],
)
def test_difference_refuses_torch_triton_and_cuda_wheels(package):
    host = gpu_wheels.closure(report(("transformers", "5.17.0"), package))
    with pytest.raises(ValueError, match=f"the resolution must keep the base's {gpu_wheels.canonical(package[0])}"):
        gpu_wheels.difference(host, BASE)


def test_torchvision_and_torchaudio_may_be_downloaded():
    assert not gpu_wheels.never_download("torchvision") and not gpu_wheels.never_download("torchaudio")
    assert gpu_wheels.never_download("Torch") and gpu_wheels.never_download("nvidia-cublas-cu13")


def test_manifest_of_a_target_that_fits():
    wheels = {"trl-1.16.0-py3-none-any.whl": 600_000, "datasets-4.8.4-py3-none-any.whl": 500_000}
    entry = gpu_wheels.target_manifest("trl", wheels, budget=64 * MIB, shadowed={}, route="with the base")
    assert entry["fits"] is True and entry["count"] == 2 and entry["total_bytes"] == 1_100_000
    assert "transfers" not in entry


def test_manifest_of_a_target_over_budget_names_its_transfers():
    wheels = {"a.whl": 40 * MIB, "b.whl": 30 * MIB, "c.whl": 20 * MIB, "d.whl": 10 * MIB, "big.whl": 70 * MIB}
    entry = gpu_wheels.target_manifest(
        "ms-swift", wheels, budget=64 * MIB, shadowed={"transformers": ("5.17.0", "5.6.0")}, route="r"
    )
    assert entry["fits"] is False and entry["total_mib"] == 170.0
    assert entry["too_large"] == ["big.whl"]
    transfers = entry["transfers"]
    assert sorted(f for t in transfers for f in t) == sorted(wheels)  # every wheel, once
    for t in transfers:
        assert len(t) == 1 or sum(wheels[f] for f in t) <= 64 * MIB, t
    assert transfers == [["big.whl"], ["a.whl", "c.whl"], ["b.whl", "d.whl"]]  # first-fit decreasing
    assert entry["shadows_base"] == {"transformers": {"base": "5.17.0", "target": "5.6.0"}}


def test_markdown_names_every_target_with_its_size_and_fit():
    fits = gpu_wheels.target_manifest("trl", {"x.whl": MIB}, budget=64 * MIB, shadowed={}, route="with the base")
    over = gpu_wheels.target_manifest("ms-swift", {"y.whl": 65 * MIB}, budget=64 * MIB, shadowed={}, route="r")
    manifest = {
        "meta": {
            "python_version": "3.12",
            "platform": "manylinux_2_28_x86_64",
            "base": ["torch==2.11.*"],
            "budget_mib": 64,
        },
        "targets": {"trl": fits, "ms-swift": over, "llamafactory": {"error": "pip could not resolve"}},
    }
    text = gpu_wheels.markdown(manifest)
    assert "| trl | 1 | 1.0 | yes |" in text
    assert "| ms-swift | 1 | 65.0 | NO: 1 transfers |" in text
    assert "| llamafactory | - | - | NO: pip could not resolve |" in text


def test_platforms_expand_to_every_older_manylinux_tag():
    tags = gpu_wheels.platforms("manylinux_2_28_x86_64")
    assert tags[0] == "manylinux_2_28_x86_64" and "manylinux_2_17_x86_64" in tags and "manylinux2014_x86_64" in tags
    assert "manylinux_2_29_x86_64" not in tags and len(tags) == len(set(tags))
    assert gpu_wheels.platforms("macosx_11_0_arm64") == ["macosx_11_0_arm64"]


def test_stub_is_a_metadata_only_wheel(tmp_path):
    gpu_wheels._stub(tmp_path, "torch", "2.11.0+stub", gpu_wheels.HEAVY["torch"])
    (wheel,) = tmp_path.glob("*.whl")
    assert wheel.name == "torch-2.11.0+stub-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as z:
        meta = z.read("torch-2.11.0+stub.dist-info/METADATA").decode()
        assert all(not n.endswith(".py") for n in z.namelist())
    assert "Version: 2.11.0+stub" in meta and "Requires-Dist: sympy>=1.13.3" in meta and "nvidia" not in meta


@pytest.mark.parametrize("spec", ["torch>=2.11", "torch", "torch==2.11.0rc1"])
def test_the_base_must_pin_torch_exactly(spec):
    with pytest.raises(ValueError, match="--base must pin torch and triton"):
        gpu_wheels._heavy_version(spec)


def test_heavy_version():
    assert gpu_wheels._heavy_version("torch==2.11.*") == "2.11.0"
    assert gpu_wheels._heavy_version("triton==3.6.1") == "3.6.1"
