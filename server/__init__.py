"""The aiohttp application of Cero API: routes, sign-in, transports and configuration."""
