"""Scoring: judges and similarity scores per image, and their aggregation."""
