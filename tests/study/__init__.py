"""The human retrieval study: design, server, browser, command line and load."""
