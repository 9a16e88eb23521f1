"""The agent tasks: the job that runs one, its services, its settings and its screens."""
