"""Stage contract, registry, compiler and planner: everything between a spec and an executor."""
