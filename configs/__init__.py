"""Gin files shipped as package data (see trainer/flags.py for the search path)."""
