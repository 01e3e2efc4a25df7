"""The data plane: the one protocol-neutral door under every front end (`plane`), its model
repository and session extensions, and the request context a front end hands it."""
