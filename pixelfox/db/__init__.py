"""Metadata database: SQLAlchemy models and the engine/session factory (owned by the manager)."""
