"""The pure core: wire formats, crypto constructions and rules. No asyncio, sockets or SQL here."""
