"""Turns outcome data and production feedback into registered router versions."""
