"""Load, validate and keep tool and job definitions.

``Registry.load(paths)`` reads YAML and JSON files and folders, validates every definition and its
cross-references (collecting every problem, each with its file and JSON path) and keeps the valid
ones by ``(id, version)``.
"""

from toolweave.model.graph import output_source, sink_steps
from toolweave.registry.checks import COMPATIBLE, Catalog, MemoryCatalog, compatible
from toolweave.registry.graph import topological_order
from toolweave.registry.loader import Definition, Loaded, LoadResult, load_definitions, load_files
from toolweave.registry.problems import DefinitionError, Problem
from toolweave.registry.registry import Registry, version_key
from toolweave.registry.validate import validate_job
from toolweave.registry.validate_tool import validate_tool

__all__ = [
    "COMPATIBLE",
    "Catalog",
    "Definition",
    "DefinitionError",
    "LoadResult",
    "Loaded",
    "MemoryCatalog",
    "Problem",
    "Registry",
    "compatible",
    "load_definitions",
    "load_files",
    "output_source",
    "sink_steps",
    "topological_order",
    "validate_job",
    "validate_tool",
    "version_key",
]
