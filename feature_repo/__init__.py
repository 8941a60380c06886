"""The Feast feature repository (definitions.py, feature_store.yaml) and the push/read client.

Only definitions.py is a Feast definition file; .feastignore keeps `feast apply` from importing
(and so executing) the other modules.
"""
