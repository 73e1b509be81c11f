"""Storage: one SQLAlchemy Core implementation for SQLite and PostgreSQL, split by noun."""
