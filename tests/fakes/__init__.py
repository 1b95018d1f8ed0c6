"""Stand-ins that speak real wire formats over HTTP (never mocks of our modules)."""
