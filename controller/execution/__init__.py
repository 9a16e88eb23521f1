"""Running tasks: admission (submission checks, folder grants, the disk guard) and the runner."""
