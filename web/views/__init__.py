"""Request handlers, one module per area: pages, auth, api, health."""
