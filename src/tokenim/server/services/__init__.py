"""Behaviour lives here.

`check_*` validates, `do_*` changes state in one transaction, `access_*` fetches with a permission check.
"""
