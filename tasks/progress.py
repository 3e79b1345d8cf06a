"""A stage's progress in the Prefect UI: the `progress <stage> step n/total ...` lines its process logs
(models/progress.py) drive a progress artifact (`progress-<stage>`) of the task or flow run that launched it."""

from __future__ import annotations

from models.progress import PROGRESS_LINE


class ProgressArtifact:
    """Wraps a log-line sink: every line passes through; a progress line also creates or updates the artifact."""

    def __init__(self, log_line):
        self.log_line, self.artifact_id = log_line, None

    def __call__(self, line: str) -> None:
        self.log_line(line)
        found = PROGRESS_LINE.search(line)
        if found:
            self.update(found["stage"], 100 * int(found["step"]) / max(1, int(found["total"])), line[found.start() :])

    def update(self, stage: str, percent: float, description: str) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        if self.artifact_id is None:
            key = f"progress-{stage.replace('_', '-').lower()}"
            self.artifact_id = create_progress_artifact(percent, key=key, description=description)
        else:
            update_progress_artifact(self.artifact_id, percent, description=description)
