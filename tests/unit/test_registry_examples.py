"""Every definition shipped in examples/ validates, and the seed's example job means what it says."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolweave.registry import Registry, output_source

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FILES = sorted(p for p in EXAMPLES.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))


def registry_with_builtins() -> Registry:
    registry = Registry()
    try:
        from toolweave.services.builtin import builtin_tool_definitions
    except ImportError:  # pragma: no cover - the builtin tools are part of the package
        return registry
    registry.add_tools(builtin_tool_definitions())
    return registry


def test_examples_exist() -> None:
    assert any(p.name == "generate_and_upscale_image.json" for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_every_example_file_validates(path: Path) -> None:
    # Load the whole folder (a job needs the tools beside it) and check this file has no problem.
    registry = registry_with_builtins()
    problems = registry.load([EXAMPLES])
    assert [str(p) for p in problems if p.file == str(path)] == []


def test_the_whole_examples_folder_validates() -> None:
    assert [str(p) for p in registry_with_builtins().load([EXAMPLES])] == []


def test_the_seed_job() -> None:
    registry = Registry()
    assert registry.load([EXAMPLES / "seed"]) == []
    job = registry.job("generate_and_upscale_image")
    assert registry.topological_order(job) == ["generate_image", "upscale_image"]
    assert output_source(job, job.output_schema[0]) == ("upscale_image", "upscaled_image_url", None)
    assert registry.tool("comfy-fluxGeneral").service == "comfydeploy"
    assert registry.tool("comfy-RealESRGAN").output("upscaled_image_url") is not None
