"""Self-contained HTML reports (images embedded as base64 PNG) for runs and sweeps, and their figures."""
