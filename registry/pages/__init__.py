"""Server-rendered pages for people: resolver, catalog explorer, national dashboard."""
