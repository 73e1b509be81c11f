"""Pure building blocks shared by every layer: ids, errors, clock, canonical JSON, signing.

This package imports nothing outside itself but the standard library and pyca `cryptography`.
"""
