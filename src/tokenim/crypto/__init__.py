"""The client's crypto machine around vodozemac. Takes events and time in, returns results and requests; no I/O."""
