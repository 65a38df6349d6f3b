"""The live dashboard: a Flask app (services.dashboard.app:create_app) served by gunicorn on :8080."""
