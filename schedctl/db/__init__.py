"""Persistence: SQLAlchemy Core tables, repository functions and Alembic migrations."""
