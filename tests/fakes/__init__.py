"""Fakes of the platforms' servers: small aiohttp apps that listen on 127.0.0.1 only."""
