"""Data sets used for accuracy evaluation and bag generation."""
