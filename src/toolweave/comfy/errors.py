"""The one error workflow import raises."""

from __future__ import annotations

from collections.abc import Iterable


class WorkflowImportError(ValueError):
    """A workflow that cannot be imported, with a short machine-readable ``reason``.

    Reasons: ``invalid_json``, ``unsupported_format``, ``unsupported_feature``, ``invalid_workflow``,
    ``missing_nodes`` (``missing_classes`` names them), ``api_nodes`` (partner API nodes; ``classes``
    names them), ``no_outputs``, ``invalid_inputs``, ``missing_deployment_id``, ``object_info``.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        missing_classes: Iterable[str] = (),
        classes: Iterable[str] = (),
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.missing_classes: list[str] = sorted(set(missing_classes))
        self.classes: list[str] = sorted(set(classes)) or list(self.missing_classes)

    def __str__(self) -> str:
        return self.message
