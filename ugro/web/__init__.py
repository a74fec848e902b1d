"""The dashboard (ugro.web.app) and how it is served (ugro.web.serve)."""
