"""Ready-made configurations, one per experiment of the paper (JSON files read by ``--game``)."""
