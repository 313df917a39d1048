"""Small shared helpers: errors, atomic IO, the artifact store, seeding, devices, provenance."""
