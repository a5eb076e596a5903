"""Local API emulators (``amplitude/``, ``mixpanel/``) sharing ``runner.py`` to serve an aiohttp app."""
