"""Landing files -> Arrow: source contracts, readers per format, the sample data generator.

Never imports Dagster.
"""
