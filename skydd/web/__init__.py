"""Skydd's web surface (FastAPI on uvicorn): the access-decision API and forward-auth."""
