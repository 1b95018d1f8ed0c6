"""Server-rendered pages (no build step); HTML templates ship as package data."""
