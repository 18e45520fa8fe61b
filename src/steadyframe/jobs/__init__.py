"""The job table: the single source of truth for every job (see DESIGN.md "Job lifecycle")."""
