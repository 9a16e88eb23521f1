"""What the controller keeps: the database (`db`), its records (`models`), and the stores of
threads, tasks and events built on them."""
