"""The Django web application."""
