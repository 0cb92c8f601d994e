"""Everything that speaks the NVR's language: login, REST calls, websocket streams."""
