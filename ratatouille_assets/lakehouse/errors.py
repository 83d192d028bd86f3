"""Small domain exceptions for the storage layer."""


class LakehouseError(Exception):
    """Base class for storage errors."""


class SchemaEvolutionError(LakehouseError):
    """The incoming data cannot be reconciled with the table's schema by adding columns."""


class CommitConflictError(LakehouseError):
    """A commit kept conflicting with concurrent writers after every retry."""


class HeadMovedError(CommitConflictError):
    """The table changed since the data was computed from it (a merge read an older head): committing
    would undo the other write, so nothing was committed; computing again from the new head is the fix."""


class CatalogLockedError(LakehouseError):
    """The SQLite catalog stayed locked by another process for as long as a commit retries."""


class PartitionContractError(LakehouseError, ValueError):
    """Rows cannot be placed in the partition window being written (wrong type, NULL, outside it)."""


class PartitionTypeError(PartitionContractError):
    """The partition column is neither a DATE nor a TIMESTAMP: it has no day."""


class IncompatibleSchemaError(SchemaEvolutionError):
    """A change the table cannot take in place (a narrowed or retyped column): it needs a rebuild."""


class SchemaChangeRefusedError(SchemaEvolutionError):
    """The schema changed and the write's policy is to refuse any change."""


class SnapshotExpiredError(LakehouseError):
    """A snapshot an operation needed was expired by maintenance meanwhile: nothing was committed."""
