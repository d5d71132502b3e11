"""The one Django app: the caption database, search and player pages, the JSON API, uploads and streaming."""
