"""HTTP routers. They parse and shape; the engine does the work."""
