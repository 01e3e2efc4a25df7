"""Where the engine runs: in this process (`local`, `host`), or in another one that front-end
processes reach over a socket and shared memory (`process`, `transport`)."""
