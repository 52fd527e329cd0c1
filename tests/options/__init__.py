"""The command line and the frozen run config: options, game files, refusals, a newcomer's first hour."""
