//! Importers of capture formats.
