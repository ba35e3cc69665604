"""The database: pools, the schema (SQLAlchemy Core), migrations, the metric catalogue,
the audit log and telemetry history reads.
"""
