"""The job table: the single source of truth for every job (see docs/architecture.md "Job lifecycle")."""
