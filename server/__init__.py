"""server: the FastAPI latency service (app, database, job queue, auth, metrics); see README "Service"."""
