"""What the identity stage found, for the run summary and the ledger."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

EXAMPLES = 10


@dataclass(slots=True)
class IdentityReport:
    """Counts from pass 1 and ``finish()``; ``*_examples`` hold up to ``EXAMPLES`` IDs each."""

    mode: str
    retroactive: bool
    cluster_cap: int
    records_observed: int = 0
    identity_records: dict[str, int] = field(default_factory=dict)
    junk_ids: dict[str, int] = field(default_factory=dict)
    links: int = 0  # distinct ID-to-ID links observed (device-user pairs, identify/alias/merge)
    ids: int = 0  # distinct IDs in the graph
    clusters: int = 0  # groups of two or more linked IDs
    clusters_with_user: int = 0
    shared_devices: int = 0  # devices seen with two or more users (they keep the first)
    shared_device_examples: list[str] = field(default_factory=list)
    cap_hits: int = 0  # links refused because the cluster would pass cluster_cap IDs
    cap_examples: list[str] = field(default_factory=list)
    refused_links: int = 0  # identify-type links refused: the anonymous ID already had a user
    refused_examples: list[str] = field(default_factory=list)
    table_rows: int = 0
    table_rows_skipped: int = 0
    table_conflicts: int = 0  # IDs the table maps to two or more resolved IDs (last row wins)
    spilled: bool = False
    ids_spilled: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def count_junk(self, field_name: str) -> None:
        self.junk_ids[field_name] = self.junk_ids.get(field_name, 0) + 1


def note(examples: list[str], value: str) -> None:
    """Keep the first few examples (input order is deterministic, so is the report)."""
    if len(examples) < EXAMPLES:
        examples.append(value)
