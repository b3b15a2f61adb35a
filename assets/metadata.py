"""Metadata helpers shared by the asset modules: previews, count tables, data versions of rows."""

from dagster import DataVersion, MetadataValue, TableColumn, TableRecord, TableSchema

from srl_platform.storage import content_hash
from srl_platform.traces import canonical_json


def rows_version(*parts: object) -> DataVersion:
    return DataVersion(content_hash(*(canonical_json(part) for part in parts)))


def preview(rows: list[dict], columns: tuple[str, ...], limit: int = 5) -> MetadataValue:
    """The first rows as a markdown table, long cells cut (a preview, not the data)."""

    def cell(value: object) -> str:
        text = value if isinstance(value, str) else repr(value)
        text = " ".join(text.split()).replace("|", "\\|")
        return text if len(text) <= 80 else text[:79] + "…"

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows[:limit]:
        lines.append("| " + " | ".join(cell(row.get(c)) for c in columns) + " |")
    if len(rows) > limit:
        lines.append(f"\n{limit} of {len(rows)} rows shown.")
    return MetadataValue.md("\n".join(lines) if rows else "_no rows_")


def counts_table(counts: dict[str, int], name: str) -> MetadataValue:
    schema = TableSchema(columns=[TableColumn(name, "string"), TableColumn("count", "int")])
    return MetadataValue.table([TableRecord({name: k, "count": v}) for k, v in counts.items()], schema)
