"""Casting landing values to a source's declared types, refusing every cast that changes a value.

DuckDB's ``CAST`` is generous: ``'12.7'`` becomes the integer 13, ``'0x10'`` 16, ``'19.999'`` the
decimal 20.00, a Parquet double 1.005 the decimal 1.00, ``true`` the integer 1, and the text
``2024-03-01T10:00:00+02:00`` the timestamp 10:00 (its offset dropped). Stored in bronze, each is a
silently wrong value. Here every declared column gets an expression that casts a value only when
the value survives the cast unchanged, and raises otherwise; on that failure path the reader
counts, per column, the values that do not convert and the values that would change, with an
example, and quarantines the file.

The rules (docs/your-own-data.md, "Types"):

- integer columns take integer digits (``12``, ``-3``, ``+4``, ``12.0``): no fraction, exponent,
  hex or digit separators;
- ``decimal(p, s)`` takes plain decimal numbers with at most ``s`` significant fractional digits;
- ``timestamp`` is UTC: text with an offset or a zone (``+02:00``, ``Z``, ``Europe/Paris``) is
  converted to UTC, text without one is taken as UTC, a Parquet ``TIMESTAMPTZ`` is converted to UTC;
  digits past the microsecond must be zeros. ``timestamptz`` keeps the instant the same way;
- ``date`` takes a date, or a time stamp at midnight;
- booleans and numbers do not convert into each other; a nested value (JSON object or array,
  Parquet struct, list or map) and binary data convert into nothing;
- between stored types (Parquet) a cast must round-trip: the value cast back equals the original.
"""

from __future__ import annotations

import dataclasses
import re

from ratatouille_assets.lakehouse.duck import quote_ident

# The text of a JSON column read as JSON (a JSON string unquoted, a number as written).
_JSON_TEXT = "json_extract_string({q}, '$')"
LOSSY_MARKER = "ratatouille: a value would change"

_INTEGERS = {"bigint": "BIGINT", "integer": "INTEGER", "int": "INTEGER", "smallint": "SMALLINT"}
_NAMES = {
    **_INTEGERS, "varchar": "VARCHAR", "text": "VARCHAR", "string": "VARCHAR", "double": "DOUBLE", "float": "FLOAT",
    "boolean": "BOOLEAN", "date": "DATE", "timestamp": "TIMESTAMP", "timestamptz": "TIMESTAMP WITH TIME ZONE",
}
_NUMERIC = re.compile(r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT"
                      r"|FLOAT|DOUBLE|DECIMAL\(\d+,\s*\d+\))$")
_TEMPORAL = re.compile(r"^(DATE|TIMESTAMP(_S|_MS|_NS)?|TIMESTAMP WITH TIME ZONE)$")
_NESTED = re.compile(r"(\[\d*\]$|^(STRUCT|MAP|UNION)\()")
_DECIMAL = re.compile(r"^decimal\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
_TEXT = ("VARCHAR", "JSON")

_INTEGER_TEXT = r"\s*[+-]?[0-9]+(\.0*)?\s*"
_DECIMAL_TEXT = r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)\s*"
# A fraction of more than six digits whose digits past the sixth are not all zeros (sub-microsecond).
_SUB_MICROSECOND = r"\.[0-9]{6}0*[1-9]"
# An ISO date or time stamp with no offset or zone and at most microseconds.
_ZONELESS_TIMESTAMP = r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?)?"


def duck_type(declared: str) -> str:
    """The DuckDB type of a type as sources.yml declares it (``int`` -> ``INTEGER``, ...)."""
    declared = declared.strip().lower()
    if match := _DECIMAL.match(declared):
        return f"DECIMAL({match.group(1)},{match.group(2)})"
    return _NAMES[declared]


@dataclasses.dataclass(frozen=True)
class Cast:
    """How one declared column is read from one file."""

    value: str  # the cast expression, NULL for NULL
    ok: str | None  # SQL: true when the (non-NULL) value converts without change; None: always
    refused: str | None = None  # the stored type cannot become the declared one at all: why
    # A shortcut taken by most values: where ``fast[0]`` holds, the value is ``fast[1]`` and it
    # converts without change (``ok`` is not evaluated); ``value`` and ``ok`` are for the others.
    fast: tuple[str, str] | None = None

    @staticmethod
    def _try(expression: str) -> str:
        return expression.replace("CAST(", "TRY_CAST(")

    @property
    def try_value(self) -> str:
        """The value, NULL instead of an error where a value does not convert."""
        if self.fast is None:
            return self._try(self.value)
        return f"CASE WHEN {self.fast[0]} THEN {self._try(self.fast[1])} ELSE {self._try(self.value)} END"

    @property
    def exact(self) -> str | None:
        """SQL: true when the (non-NULL) value converts without change; None: always."""
        if self.fast is None or self.ok is None:
            return self.ok  # with a shortcut and no ok: every value converts unchanged
        return f"({self.fast[0]}) OR ({self.ok})"

    def select(self, column: str) -> str:
        """The select item: the value where ``ok``, an error (the file is rejected) where not."""
        q = quote_ident(column)
        if self.fast is not None:
            rest = (f"WHEN {self.ok} THEN {self.value} ELSE error('{LOSSY_MARKER}')" if self.ok is not None
                    else f"ELSE {self.value}")
            return f"CASE WHEN {q} IS NULL OR ({self.fast[0]}) THEN {self.fast[1]} {rest} END AS {q}"
        if self.ok is None:
            return f"{self.value} AS {q}"
        return f"CASE WHEN {q} IS NULL OR ({self.ok}) THEN {self.value} ELSE error('{LOSSY_MARKER}') END AS {q}"

    def nulling_select(self, column: str) -> str:
        """The select item of a source with ``on_bad_value: null``: the value where it converts
        unchanged, NULL where it does not convert or would change."""
        q = quote_ident(column)
        if self.fast is not None:
            rest = f"WHEN {self.ok} THEN {self._try(self.value)}" if self.ok is not None else f"ELSE {self._try(self.value)}"
            return f"CASE WHEN {self.fast[0]} THEN {self._try(self.fast[1])} {rest} END AS {q}"
        if self.ok is None:
            return f"{self.try_value} AS {q}"
        return f"CASE WHEN ({self.ok}) THEN {self.try_value} END AS {q}"

    def nulled(self, column: str) -> str:
        """SQL counting the non-NULL values of ``column`` that :meth:`nulling_select` sets to NULL."""
        q = quote_ident(column)
        ok = f"({self.exact}) AND " if self.exact else ""
        return f"count(*) FILTER (WHERE {q} IS NOT NULL AND NOT coalesce({ok}{self.try_value} IS NOT NULL, false))"


def column_cast(column: str, stored: str, declared: str) -> Cast:
    """The cast of ``column``, stored in the file as DuckDB type ``stored`` (VARCHAR for CSV, JSON
    for JSON lines, the Parquet column's type), to the ``declared`` source type."""
    q = quote_ident(column)
    target = duck_type(declared)
    shown, stored = stored, stored.upper()
    if stored in _TEXT:
        text = _JSON_TEXT.format(q=q) if stored == "JSON" else q
        cast = _from_text(text, target, declared)
        if stored == "JSON":  # JSON lines: an object or array is not a scalar of any declared type
            scalar = f"json_type({q}) NOT IN ('OBJECT', 'ARRAY')"
            fast = (f"{scalar} AND {cast.fast[0]}", cast.fast[1]) if cast.fast else None
            return Cast(cast.value, scalar if cast.ok is None else f"{scalar} AND {cast.ok}", fast=fast)
        return cast
    if stored == target:
        return Cast(q, None)
    why = _refusal(stored, target, shown)
    if why:
        return Cast(f"CAST(NULL AS {target})", None, refused=why)
    if target == "VARCHAR":
        return Cast(f"CAST({q} AS VARCHAR)", None)
    # Between stored types: the value cast back to its stored type must equal the original.
    return Cast(f"CAST({q} AS {target})", f"TRY_CAST(TRY_CAST({q} AS {target}) AS {stored}) = {q}")


def _from_text(text: str, target: str, declared: str) -> Cast:
    if target == "VARCHAR":
        return Cast(text, None)
    if target in _INTEGERS.values():
        return Cast(f"CAST({text} AS {target})", f"regexp_full_match({text}, '{_INTEGER_TEXT}')")
    if target.startswith("DECIMAL"):
        scale = int(_DECIMAL.match(declared.strip().lower()).group(2))
        fraction = f"length(rtrim(regexp_extract({text}, '\\.([0-9]*)', 1), '0'))"
        return Cast(f"CAST({text} AS {target})", f"regexp_full_match({text}, '{_DECIMAL_TEXT}') AND {fraction} <= {scale}")
    if target == "TIMESTAMP":
        # Through TIMESTAMPTZ: an offset or zone in the text is applied (a plain TIMESTAMP cast
        # would drop it); the session is UTC, so text without one is UTC, and the result is the UTC
        # wall time. ISO text without an offset or zone, and at most microseconds, takes the plain
        # cast: the same value (the session is UTC) at a fraction of the cost of the time zone
        # conversion, and one pattern match per value instead of two.
        return Cast(
            f"CAST(CAST({text} AS TIMESTAMPTZ) AS TIMESTAMP)",
            f"NOT regexp_matches({text}, '{_SUB_MICROSECOND}')",
            fast=(f"regexp_full_match({text}, '{_ZONELESS_TIMESTAMP}')", f"CAST({text} AS TIMESTAMP)"),
        )
    if target == "TIMESTAMP WITH TIME ZONE":
        return Cast(f"CAST({text} AS TIMESTAMPTZ)", f"NOT regexp_matches({text}, '{_SUB_MICROSECOND}')")
    if target == "DATE":
        return Cast(f"CAST({text} AS DATE)", f"TRY_CAST({text} AS DATE) = TRY_CAST({text} AS TIMESTAMP)")
    return Cast(f"CAST({text} AS {target})", None)  # DOUBLE, FLOAT, BOOLEAN: DuckDB's own parsing


def _refusal(stored: str, target: str, shown: str) -> str | None:
    """Why a value of stored type ``stored`` can never become ``target`` (None: it may, value by value)."""
    if _NESTED.search(stored):
        return f"it holds nested values ({shown}), which {target} cannot hold"
    if stored == "BLOB":
        return f"it holds binary data (BLOB), which {target} cannot hold"
    if "BOOLEAN" in (stored, target) and stored != target and target != "VARCHAR":
        return f"it is {stored} in the file: booleans and numbers do not convert into each other"
    if (_NUMERIC.match(stored) and _TEMPORAL.match(target)) or (_TEMPORAL.match(stored) and _NUMERIC.match(target)):
        return f"it is {stored} in the file, which cannot become {target}"
    return None
