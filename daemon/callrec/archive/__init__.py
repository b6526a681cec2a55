"""The archive: recordings transcoded, encrypted with a key of their own and kept in an
object store, destroyed by destroying that key (docs/archive.md)."""
