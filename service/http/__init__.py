"""The HTTP front end: the edge, the routes of the v1 API and of the Open Inference Protocol,
problem answers, auth, the docs and the HTTP protocol. Routes read HTTP and call the data plane;
it does the work."""
