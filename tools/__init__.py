"""Development tools of nvr-bridge: run from the repository, never installed with it."""
