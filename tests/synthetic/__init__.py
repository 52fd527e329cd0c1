"""The synthetic world and its tiny version."""
