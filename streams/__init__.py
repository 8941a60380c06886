"""The Faust app, topics, producers and the `intentflow` command line: wiring only."""
