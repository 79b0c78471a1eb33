"""A parse cache for the sql/ folder, like dbt's manifest.

Parsing every model with sqlglot costs about two seconds, and the code location loads the
project in every process (webserver, daemon, each run worker). The validated result of
``parse_sql_project`` is therefore stored as JSON in ``$CHURN_HOME/.cache/sql_manifest.json``
under a fingerprint of everything it depends on: the path and bytes of every .sql/.yml/.yaml
file under the sql dir, the external asset keys, the cache format, the sqlglot version and
the parsing code itself. On a hit neither sqlglot nor yaml is imported.

Only projects that parsed without error are written, so a broken project is parsed (and
its error raised) on every load. Any problem with the cache file (missing, unreadable,
corrupt, unwritable folder) falls back to parsing; the cache never makes a load fail.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from churn_assets.core.paths import churn_home
from churn_assets.sql_models.loader import (
    YAML_SUFFIXES,
    ColumnDoc,
    DataTest,
    ModelConfig,
    ParsedProject,
    SingularTest,
    SqlModel,
    parse_sql_project,
)

logger = logging.getLogger(__name__)

# Bump when the JSON layout below changes.
CACHE_FORMAT_VERSION = 2
MANIFEST_FOLDER = ".cache"
MANIFEST_NAME = "sql_manifest.json"
INPUT_SUFFIXES = (".sql", *YAML_SUFFIXES)
# The modules whose code decides what a parse produces; editing them invalidates the cache.
_PARSER_SOURCES = (Path(__file__).with_name("loader.py"), Path(__file__))


class _Uncacheable(ValueError):
    """A parsed value JSON cannot carry faithfully (an exotic YAML type)."""


def default_manifest_path() -> Path | None:
    """``$CHURN_HOME/.cache/sql_manifest.json``, or None when $CHURN_HOME cannot be created."""
    try:
        return churn_home() / MANIFEST_FOLDER / MANIFEST_NAME
    except OSError as error:
        logger.debug("SQL parse cache disabled: %s", error)
        return None


def _sqlglot_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("sqlglot")
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def project_fingerprint(sql_dir: Path, external_assets: Sequence[dg.AssetKey]) -> str:
    """A hash of every input of ``parse_sql_project``; reading the files is all it costs."""
    digest = hashlib.sha256()

    def add(chunk: bytes) -> None:
        # Length-prefixed so that no two different inputs concatenate to the same stream.
        digest.update(len(chunk).to_bytes(8, "big"))
        digest.update(chunk)

    header = {
        "format": CACHE_FORMAT_VERSION,
        "sqlglot": _sqlglot_version(),
        "external_assets": sorted(list(key.path) for key in external_assets),
    }
    add(json.dumps(header, sort_keys=True).encode())
    for source in _PARSER_SOURCES:
        add(source.read_bytes())
    inputs = sorted(
        p for p in sql_dir.rglob("*") if p.suffix in INPUT_SUFFIXES and p.is_file()
    )
    for path in inputs:
        add(path.relative_to(sql_dir).as_posix().encode())
        add(path.read_bytes())
    return digest.hexdigest()


# --- JSON encoding of a ParsedProject -------------------------------------------------------
# Paths are stored relative to the sql dir so that a moved checkout still hits.


def _encode_value(value: Any) -> Any:
    """A YAML value as JSON; dates and mappings are tagged so they decode to the same type."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, list):
        return [_encode_value(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"$map": {k: _encode_value(v) for k, v in value.items()}}
    raise _Uncacheable(f"cannot cache a {type(value).__name__} value: {value!r}")


def _decode_value(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode_value(v) for v in value]
    if isinstance(value, dict):
        ((tag, payload),) = value.items()
        if tag == "$datetime":
            return datetime.fromisoformat(payload)
        if tag == "$date":
            return date.fromisoformat(payload)
        if tag == "$map":
            return {k: _decode_value(v) for k, v in payload.items()}
        raise ValueError(f"unknown tag {tag!r}")
    return value


def _relative_path(path: Path, sql_dir: Path) -> str:
    try:
        return path.relative_to(sql_dir).as_posix()
    except ValueError as error:
        raise _Uncacheable(f"{path} is outside {sql_dir}") from error


def _key(key: dg.AssetKey | None) -> list[str] | None:
    return None if key is None else list(key.path)


def _encode_test(test: DataTest, sql_dir: Path) -> dict[str, Any]:
    return {
        "kind": test.kind,
        "check_name": test.check_name,
        "severity": test.severity,
        "column": _encode_value(test.column),
        "args": _encode_value(dict(test.args)),
        "source": _relative_path(test.source, sql_dir),
        "to_key": _key(test.to_key),
    }


def _decode_test(data: dict[str, Any], sql_dir: Path) -> DataTest:
    return DataTest(
        kind=data["kind"],
        check_name=data["check_name"],
        severity=data["severity"],
        column=_decode_value(data["column"]),
        args=_decode_value(data["args"]),
        source=sql_dir / data["source"],
        to_key=dg.AssetKey(data["to_key"]) if data["to_key"] is not None else None,
    )


def _encode_model(model: SqlModel, sql_dir: Path) -> dict[str, Any]:
    return {
        "key": _key(model.key),
        "schema": model.schema,
        "name": model.name,
        "path": _relative_path(model.path, sql_dir),
        "sql": model.sql,
        "config": model.config.as_dict(),
        "description": _encode_value(model.description),
        "columns": [
            {
                "name": column.name,
                "description": _encode_value(column.description),
                "tests": [_encode_test(t, sql_dir) for t in column.tests],
            }
            for column in model.columns
        ],
        "tests": [_encode_test(t, sql_dir) for t in model.tests],
        "deps": [_key(k) for k in model.deps],
        "parameters": sorted(model.parameters),
        "yaml_path": _relative_path(model.yaml_path, sql_dir) if model.yaml_path else None,
    }


def _decode_model(data: dict[str, Any], sql_dir: Path) -> SqlModel:
    return SqlModel(
        key=dg.AssetKey(data["key"]),
        schema=data["schema"],
        name=data["name"],
        path=sql_dir / data["path"],
        sql=data["sql"],
        config=ModelConfig.from_dict(data["config"]),
        description=_decode_value(data["description"]),
        columns=tuple(
            ColumnDoc(
                name=column["name"],
                description=_decode_value(column["description"]),
                tests=tuple(_decode_test(t, sql_dir) for t in column["tests"]),
            )
            for column in data["columns"]
        ),
        tests=tuple(_decode_test(t, sql_dir) for t in data["tests"]),
        deps=tuple(dg.AssetKey(k) for k in data["deps"]),
        parameters=frozenset(data["parameters"]),
        yaml_path=sql_dir / data["yaml_path"] if data["yaml_path"] else None,
    )


def _encode_singular(test: SingularTest, sql_dir: Path) -> dict[str, Any]:
    return {
        "schema": test.schema,
        "name": test.name,
        "path": _relative_path(test.path, sql_dir),
        "sql": test.sql,
        "severity": test.severity,
        "targets": [_key(k) for k in test.targets],
        "deps": [_key(k) for k in test.deps],
    }


def _decode_singular(data: dict[str, Any], sql_dir: Path) -> SingularTest:
    return SingularTest(
        schema=data["schema"],
        name=data["name"],
        path=sql_dir / data["path"],
        sql=data["sql"],
        severity=data["severity"],
        targets=tuple(dg.AssetKey(k) for k in data["targets"]),
        deps=tuple(dg.AssetKey(k) for k in data["deps"]),
    )


def encode_project(parsed: ParsedProject) -> dict[str, Any]:
    sql_dir = parsed.sql_dir
    return {
        "models": [_encode_model(m, sql_dir) for m in parsed.models],
        "singular_tests": [_encode_singular(t, sql_dir) for t in parsed.singular_tests],
        "external_keys": [_key(k) for k in parsed.external_keys],
    }


def decode_project(data: dict[str, Any], sql_dir: Path) -> ParsedProject:
    return ParsedProject(
        sql_dir=sql_dir,
        models=tuple(_decode_model(m, sql_dir) for m in data["models"]),
        singular_tests=tuple(_decode_singular(t, sql_dir) for t in data["singular_tests"]),
        external_keys=tuple(dg.AssetKey(k) for k in data["external_keys"]),
    )


# --- reading and writing the manifest -------------------------------------------------------


def read_manifest(manifest: Path, fingerprint: str, sql_dir: Path) -> ParsedProject | None:
    """The cached project when ``manifest`` holds one for ``fingerprint``, else None."""
    try:
        document = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        logger.debug("ignoring unreadable SQL parse cache %s: %s", manifest, error)
        return None
    if not isinstance(document, dict):
        return None
    if document.get("format") != CACHE_FORMAT_VERSION or document.get("fingerprint") != fingerprint:
        return None
    try:
        return decode_project(document["project"], sql_dir)
    except Exception as error:  # a damaged file can fail decoding in any way; parse instead
        logger.debug("ignoring corrupt SQL parse cache %s: %s", manifest, error)
        return None


def write_manifest(manifest: Path, fingerprint: str, parsed: ParsedProject) -> bool:
    """Store ``parsed`` atomically (temp file + rename); False when it could not be stored."""
    try:
        payload = json.dumps(
            {
                "format": CACHE_FORMAT_VERSION,
                "fingerprint": fingerprint,
                "sql_dir": str(parsed.sql_dir),
                "project": encode_project(parsed),
            },
            separators=(",", ":"),
        )
    except _Uncacheable as error:
        logger.debug("SQL project not cached: %s", error)
        return False
    temp_name = None
    try:
        manifest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=manifest.parent, prefix=f".{manifest.name}.", suffix=".tmp",
            delete=False,
        ) as handle:
            temp_name = handle.name
            handle.write(payload)
        # mkstemp creates the file 0600; other users running the code location may read it.
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, manifest)
        return True
    except OSError as error:
        logger.debug("SQL parse cache not written to %s: %s", manifest, error)
        if temp_name is not None:
            Path(temp_name).unlink(missing_ok=True)
        return False


def parse_sql_project_cached(
    sql_dir: Path, external_assets: Sequence[dg.AssetKey], manifest: Path | None
) -> ParsedProject:
    """``parse_sql_project`` through the manifest at ``manifest`` (no caching when None)."""
    sql_dir = Path(sql_dir).resolve()
    external_assets = tuple(external_assets)
    if manifest is None or not sql_dir.is_dir():
        return parse_sql_project(sql_dir, external_assets)
    try:
        fingerprint = project_fingerprint(sql_dir, external_assets)
    except OSError as error:
        logger.debug("SQL parse cache bypassed: %s", error)
        return parse_sql_project(sql_dir, external_assets)
    cached = read_manifest(manifest, fingerprint, sql_dir)
    if cached is not None:
        return cached
    parsed = parse_sql_project(sql_dir, external_assets)
    # A file edited while it was being parsed must not be stored under its old content.
    try:
        unchanged = project_fingerprint(sql_dir, external_assets) == fingerprint
    except OSError:
        unchanged = False
    if unchanged:
        write_manifest(manifest, fingerprint, parsed)
    return parsed
