"""Example apps for the Flask and Django integrations (the webapp2 one is ``example_app``)."""
