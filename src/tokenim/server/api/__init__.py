"""Thin HTTP routes: parse, validate, call a service, shape the response."""
