"""The secrets scan: every secret a scenario handles, searched for in every log, record and document."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass
class SecretsRegistry:
    """Where the suite's reconcilers wrote (log files, captured outputs) and what must never appear there."""

    log_dir: Path
    fixed: dict[str, str]
    tokens: set[str]  # live: the proxy adds every token it sees
    files: list[Path] = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)  # (where, text) not written to a file

    def log_file(self, name: str) -> Path:
        path = self.log_dir / f"{name}.log"
        if path not in self.files:
            self.files.append(path)
        return path

    def add_text(self, where: str, text: str) -> None:
        self.texts.append((where, text))

    def secrets(self) -> dict[str, str]:
        values = dict(self.fixed)
        for index, token in enumerate(sorted(self.tokens)):
            values[f"token #{index + 1}"] = token
        # Also the form a secret takes inside a URL or a form body.
        for label, value in list(values.items()):
            if quote(value, safe="") != value:
                values[f"{label} (url-encoded)"] = quote(value, safe="")
        return {label: value for label, value in values.items() if len(value) >= 8}

    def scan(self, files: Iterable[Path] | None = None) -> tuple[int, list[str]]:
        """(lines scanned, findings); a finding names the secret and where, never shows it."""
        secrets = self.secrets()
        findings: list[str] = []
        lines = 0
        sources: list[tuple[str, str]] = []
        for path in files if files is not None else self.files:
            if path.exists():
                sources.append((path.name, path.read_text(errors="replace")))
        if files is None:
            sources.extend(self.texts)
        for where, text in sources:
            for number, line in enumerate(text.splitlines(), 1):
                lines += 1
                for label, value in secrets.items():
                    if value in line:
                        findings.append(f"{label} in {where} line {number}")
        return lines, findings

    def assert_clean(self, files: Iterable[Path] | None = None) -> int:
        lines, findings = self.scan(files)
        assert not findings, f"secrets leaked: {findings[:20]}"
        return lines
